// The small DOM helpers both pages use (site.js and ladder.js): find, build, report and fetch.

export const SVG = "http://www.w3.org/2000/svg";

export const $ = (id) => document.getElementById(id);

// el("p", {class: "note", text: "..."}, child, ...); "svg:path" makes an SVG element; an on* attribute
// is an event listener; an attribute that is undefined or null is left out
export function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

// the page's one error line (#error), shown
export function fail(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

// fetch(url), or an Error that names the url and the server's answer
export async function fetch_ok(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: ${response.status} ${response.statusText}`);
  return response;
}
