"""The training text: tinyshakespeare, downloaded and checked where it is missing, or any UTF-8 file,
and the prompt the samples continue when none is given."""
import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path

from .errors import UserError, open_input

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
DEFAULT_CORPUS = Path("data") / "tinyshakespeare.txt"
DEFAULT_PROMPT = "ROMEO:"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download_tinyshakespeare(path, url=TINYSHAKESPEARE_URL):
    """Fetch tinyshakespeare from the char-rnn repository, check its sha256, then move it into place."""
    path = Path(path)
    print(f"downloading tinyshakespeare from {url} to {path}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            data = response.read()
    except OSError as e:
        raise UserError(f"could not download tinyshakespeare from {url} ({e}); "
                        f"download it by hand to {path}, or pass --data PATH") from None
    if sha256_of(data) != TINYSHAKESPEARE_SHA256:
        raise UserError(f"the download from {url} has sha256 {sha256_of(data)}, expected "
                        f"{TINYSHAKESPEARE_SHA256}; nothing was saved. Try again, or pass --data PATH")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def load_text(path=None):
    """Read the training text.

    path=None means tinyshakespeare at data/tinyshakespeare.txt: downloaded when missing, and its sha256
    checked every time. Any other path must be an existing UTF-8 text file.
    """
    if path is None:
        path = DEFAULT_CORPUS
        if not path.exists():
            download_tinyshakespeare(path)
        data = path.read_bytes()
        if sha256_of(data) != TINYSHAKESPEARE_SHA256:
            raise UserError(f"{path} has sha256 {sha256_of(data)}, expected {TINYSHAKESPEARE_SHA256} "
                            f"(tinyshakespeare); delete it to download it again, or pass --data {path}")
    else:
        path = Path(path)
        with open_input(path, "data file", "pass --data with an existing UTF-8 text file") as f:
            data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (bad byte at offset {e.start}); "
                        f"convert it to UTF-8 or pick another --data file") from None
    if not text:
        raise UserError(f"{path} is empty; pass --data a text file with text in it")
    return text


def default_prompt(chars):
    """The prompt to sample from when none is given, for any vocabulary: ROMEO: where the vocabulary has
    its characters, else the vocabulary's first (up to 8) characters that are not white space."""
    if set(DEFAULT_PROMPT) <= set(chars):
        return DEFAULT_PROMPT
    return "".join(c for c in chars if not c.isspace())[:8] or chars[:8]
