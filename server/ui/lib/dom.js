// Small DOM helpers shared by every view: the element builder `h`, the banner above the page,
// the breadcrumbs in the header, and `debounce`.

// h("a", {href, class, dataset, style, onclick, …}, ...children): attributes that are null,
// undefined or false are left out; children may be nodes, strings (anything else is made one)
// or arrays of them, and null, undefined or false are left out.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "style") el.style.cssText = v;
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// The banner above the page: a message (text or node), or hidden when null.
export function banner(text) {
  const b = document.getElementById("banner");
  b.replaceChildren();
  if (!text) { b.hidden = true; return; }
  b.hidden = false;
  b.append(text);
}

// The breadcrumbs: crumbs([label, link], …), a null link for the current page.
export function crumbs(...items) {
  const c = document.getElementById("crumbs");
  c.replaceChildren();
  items.forEach(([label, link], i) => {
    if (i) c.append(h("span", { class: "sep" }, "/"));
    c.append(link ? h("a", { href: link }, label) : h("span", {}, label));
  });
}

export function debounce(fn, ms) {
  let t = null;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}
