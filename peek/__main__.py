"""python -m peek {show,export,build,serve}: look inside a trained kid. --help on each lists its flags."""
import sys
from pathlib import Path

from numpy_gpt.cli import ArgumentParser, HelpFormatter, check_output, run_cli
from numpy_gpt.config import UserError
from numpy_gpt.data import DEFAULT_PROMPT


def add_model_arguments(p):
    p.add_argument("--checkpoint", default="out/kid.npz",
                   help="weights in the project's format: out/kid.npz, a snapshot in out/checkpoints/, ...")
    p.add_argument("--log", default=None,
                   help="the run's log.jsonl (default: beside the checkpoint, or one folder up for a snapshot)")
    p.add_argument("--prompt", default=None,
                   help=f"the text to run through the kid (default: {DEFAULT_PROMPT} where the vocabulary has its "
                        f"characters, else the vocabulary's first 8 characters that are not white space)")
    p.add_argument("--data", default=None,
                   help="the training text, for character counts and a passage of real text (default: "
                        "data/tinyshakespeare.txt when it is there and has the checkpoint's vocabulary)")


def parser():
    p = ArgumentParser(prog="python -m peek", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="{show,export,build,serve}")
    show = sub.add_parser("show", help="print what the kid learned", description="Print what the kid learned: "
                          "parameters, character neighbours, predictions, attention and gradients.",
                          formatter_class=HelpFormatter)
    add_model_arguments(show)
    show.add_argument("--figures", default=None, metavar="DIR",
                      help="also write PNG figures into DIR (needs matplotlib)")
    export = sub.add_parser("export", help="write the data a site is built from",
                            description="Write peek.json, weights.json and weights.bin (peek/export.py "
                                        "documents the schema).",
                            formatter_class=HelpFormatter)
    add_model_arguments(export)
    export.add_argument("--out", default="out/peek", help="folder to write the export into")
    build = sub.add_parser("build", help="write the static site",
                           description="Write the static site: ten steps through the kid on its real weights, "
                                       "ending in a playground where it writes in the browser tab.",
                           formatter_class=HelpFormatter)
    add_model_arguments(build)
    build.add_argument("--export", default=None, metavar="DIR",
                       help="build from this export (python -m peek export) instead of the checkpoint")
    build.add_argument("--parity", default=None, metavar="JSON",
                       help="parity's summary (python -m parity --json) for step 9 (default: parity.json "
                            "beside the checkpoint, when it is there)")
    build.add_argument("--out", default="site", help="folder to write the site into")
    serve = sub.add_parser("serve", help="serve a built site on 127.0.0.1",
                           description="Serve a built site on 127.0.0.1 and print its URL.",
                           formatter_class=HelpFormatter)
    from .serve import add_serve_arguments
    add_serve_arguments(serve)
    return p


def load_text_for(args, chars):
    """-> (the training text or None, its file name): --data, else the default corpus where it fits."""
    from numpy_gpt.data import DEFAULT_CORPUS, load_text
    if args.data is not None:
        text = load_text(args.data)
        if set(text) != set(chars):
            extra, lacking = sorted(set(text) - set(chars)), sorted(set(chars) - set(text))
            what = (f"has characters the kid's vocabulary lacks ({''.join(extra[:10])!r})" if extra else
                    f"lacks characters of the kid's vocabulary ({''.join(lacking[:10])!r})")
            raise UserError(f"{args.data} {what}, so it is not the text the kid was trained on; "
                            f"pass that text, or leave --data out")
        return text, Path(args.data).name
    if DEFAULT_CORPUS.is_file():
        text = DEFAULT_CORPUS.read_text(encoding="utf-8", errors="replace")
        if set(text) == set(chars):
            return text, DEFAULT_CORPUS.name
    return None, None


def export_data(args):
    from .analysis import load_kid
    from .export import build_export
    kid = load_kid(args.checkpoint)                 # the weights are read once
    text, name = load_text_for(args, kid[2])
    return build_export(args.checkpoint, args.log, args.prompt, text, name, kid=kid,
                        with_snapshots=args.command != "show")


def main(argv=None):
    args = parser().parse_args(argv)
    for flag in ("out", "figures"):                 # where it writes, checked before any work
        if getattr(args, flag, None) is not None:
            check_output(getattr(args, flag), f"--{flag}", folder=True)
    if args.command == "show":
        from .show import report
        data, *_ = export_data(args)
        if args.figures:
            from .figures import write_figures
            paths = write_figures(data, args.figures)
        sys.stdout.write(report(data))
        if args.figures:
            print(f"\nfigures: {', '.join(str(p) for p in paths)}")
    elif args.command == "export":
        from .export import write_export
        data, params, config, chars = export_data(args)
        write_export(args.out, data, params, config, chars)
        print(f"exported {args.checkpoint} to {args.out}/: peek.json, weights.json, weights.bin "
              f"({4 * data['n_params']:,} bytes)")
    elif args.command == "build":
        from .build import build_site, read_parity
        parity = args.parity
        if parity is None and (Path(args.checkpoint).parent / "parity.json").is_file():
            parity = Path(args.checkpoint).parent / "parity.json"
        if parity is not None:
            read_parity(parity, args.checkpoint)    # a bad summary is refused before the export is made
        pages = build_site(args.out, args.export if args.export else export_data(args), parity)
        size = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
        print(f"built {len(pages)} pages into {args.out}/ ({size / 1e6:.1f} MB); "
              f"serve it with: python -m peek serve --dir {args.out}")
    elif args.command == "serve":
        from .serve import run_serve
        return run_serve(args)
    return 0


if __name__ == "__main__":
    run_cli(main)
