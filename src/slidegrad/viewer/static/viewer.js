/* slidegrad view: the slide as Deep Zoom (OpenSeadragon), the run's slide maps as layers, the explained
   tiles as boxes, a side panel per tile and on-demand maps.  Coordinates: the slide is world item 0 with
   width 1, so viewport x = level-0 x / W; a map layer (Deep Zoom whose full resolution has one pixel per
   map pixel) is placed at (0, 0) with width map_width / W, map_width = map columns x level-0 px per map
   pixel (server.py). */
"use strict";

const sg = { run: null, slide: null, panes: [], syncing: false, ondemand: [], exported: null };
window.sg = sg;

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
};
const fmt = (v, digits = 3) => (v === null || v === undefined ? "–" : (typeof v === "number" ? v.toFixed(digits) : String(v)));
const enc = encodeURIComponent;

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function setBusy(text) { $("busy").textContent = text || ""; }

/* -- panes --------------------------------------------------------------------------------------- */
function layerUrl(slide, layer, cmap) {
  // OpenSeadragon's DZI source keeps the query string on every tile URL (…_files/L/C_R.png?cmap=…)
  return `/dzi/layer/${enc(slide.name)}/${layer.kind}/${enc(layer.key)}.dzi?cmap=${enc(cmap)}`;
}

function makePane(index) {
  const slide = sg.slide;
  const root = el("div", { class: "pane", id: `pane${index}` });
  const osdDiv = el("div", { class: "osd", id: `osd${index}` });
  const controls = el("div", { class: "layers" }, el("h4", {}, index === 0 ? "Layers" : "Layers (pane 2)"));
  root.append(osdDiv, controls);
  $("panes").append(root);
  const viewer = OpenSeadragon({
    element: osdDiv,
    prefixUrl: "/osd/images/",
    tileSources: `/dzi/${enc(slide.name)}.dzi`,
    drawer: "canvas",
    imageSmoothingEnabled: false,
    showNavigator: index === 0,
    navigatorPosition: "BOTTOM_RIGHT",
    navigatorSizeRatio: 0.15,
    navigationControlAnchor: OpenSeadragon.ControlAnchor.BOTTOM_LEFT,  // the layer box sits top right
    gestureSettingsMouse: { clickToZoom: false },
    animationTime: 0.3,
    maxZoomPixelRatio: 4,
    crossOriginPolicy: false,
  });
  const pane = { index, root, viewer, controls, layers: {}, boxes: [] };
  slide.layers.forEach((layer, i) => {
    // pane 1 shows the first saliency layer; pane 2 the second (to compare two methods)
    const saliency = slide.layers.filter((l) => l.kind === "saliency");
    const shown = saliency.length ? layer === saliency[Math.min(index, saliency.length - 1)] : i === 0;
    pane.layers[layerKey(layer)] = { layer, visible: shown, opacity: 0.6, cmap: layer.cmap, item: null };
  });
  viewer.addOnceHandler("open", () => {
    for (const state of Object.values(pane.layers)) addLayer(pane, state);
    drawBoxes(pane);
  });
  buildControls(pane);
  viewer.addHandler("canvas-click", (event) => onClick(pane, event));
  viewer.addHandler("viewport-change", () => syncFrom(pane));
  new OpenSeadragon.MouseTracker({ element: viewer.canvas, moveHandler: (event) => onMove(pane, event) });
  sg.panes.push(pane);
  return pane;
}

const layerKey = (layer) => `${layer.kind}:${layer.key}`;

function addLayer(pane, state) {
  const slide = sg.slide;
  const old = state.item;
  const index = old ? pane.viewer.world.getIndexOfItem(old) : undefined;
  pane.viewer.addTiledImage({
    tileSource: layerUrl(slide, state.layer, state.cmap),
    x: 0, y: 0, width: state.layer.map_width / slide.width,
    opacity: state.visible ? state.opacity : 0,
    index,
    replace: Boolean(old),
    success: (event) => { state.item = event.item; },
  });
}

function buildControls(pane) {
  for (const state of Object.values(pane.layers)) {
    const key = layerKey(state.layer);
    const check = el("input", { type: "checkbox", "data-layer": key, title: "show this layer" });
    check.checked = state.visible;
    check.addEventListener("change", () => { state.visible = check.checked; applyOpacity(state); });
    const range = el("input", { type: "range", min: "0", max: "1", step: "0.05", value: String(state.opacity),
                                "data-opacity": key, title: "opacity" });
    range.addEventListener("input", () => { state.opacity = Number(range.value); applyOpacity(state); });
    const select = el("select", { "data-cmap": key, title: "colour map" });
    for (const c of sg.run.cmaps) select.append(el("option", { value: c }, c));
    select.value = state.cmap;
    const legend = el("img", { class: "legend", src: `/cmap/${enc(state.cmap)}.png`, alt: "",
                               title: state.layer.kind === "saliency" ? "0 → 1 of the slide's scale (p99 of |attribution|)" : "probability 0 → 1" });
    select.addEventListener("change", () => { state.cmap = select.value; legend.src = `/cmap/${enc(state.cmap)}.png`; addLayer(pane, state); });
    pane.controls.append(el("div", { class: "layer" }, check, el("span", { title: key }, state.layer.label), legend, range, select));
  }
  pane.controls.append(el("div", { style: "font-size:11px;color:#555;margin-top:4px" },
    `${sg.slide.tiles.length} explained tiles${sg.slide.tiles.length > 5000 ? " (boxes: the first 5000)" : ""}`));
}

function applyOpacity(state) {
  if (state.item) state.item.setOpacity(state.visible ? state.opacity : 0);
}

function drawBoxes(pane) {
  for (const b of pane.boxes) pane.viewer.removeOverlay(b);
  pane.boxes = [];
  if (!$("boxes").checked) return;
  const W = sg.slide.width;
  for (const t of sg.slide.tiles.slice(0, 5000)) {
    const box = el("div", { class: "box", title: t.tile });
    pane.viewer.addOverlay({ element: box, location: new OpenSeadragon.Rect(t.x / W, t.y / W, t.size / W, t.size / W) });
    pane.boxes.push(box);
  }
  for (const od of sg.ondemand) addOndemandOverlay(pane, od);
}

function syncFrom(pane) {
  if (sg.syncing || sg.panes.length < 2) return;
  sg.syncing = true;
  const vp = pane.viewer.viewport;
  for (const other of sg.panes) {
    if (other === pane) continue;
    other.viewer.viewport.zoomTo(vp.getZoom(), null, true);
    other.viewer.viewport.panTo(vp.getCenter(), true);
  }
  sg.syncing = false;
}

function toImage(pane, position) {
  const point = pane.viewer.viewport.viewerElementToViewportCoordinates(position);
  return { x: point.x * sg.slide.width, y: point.y * sg.slide.width };
}

/* For tests and the export: a level-0 point's position in a pane's element, in CSS pixels. */
sg.toScreen = (paneIndex, x, y) => {
  const pane = sg.panes[paneIndex];
  const p = pane.viewer.viewport.viewportToViewerElementCoordinates(new OpenSeadragon.Point(x / sg.slide.width, y / sg.slide.width));
  const rect = pane.viewer.element.getBoundingClientRect();
  return { x: p.x + rect.left, y: p.y + rect.top };
};
sg.ready = () => sg.panes.every((p) => {
  const n = p.viewer.world.getItemCount();
  if (n < 1 + Object.keys(p.layers).length) return false;
  for (let i = 0; i < n; i++) {
    const item = p.viewer.world.getItemAt(i);  // a hidden layer (opacity 0) loads nothing
    if (item.getOpacity() > 0 && !item.getFullyLoaded()) return false;
  }
  return true;
});
sg.goTo = (paneIndex, x, y, zoom) => {  // centre on level-0 (x, y) at a viewport zoom, at once
  const vp = sg.panes[paneIndex].viewer.viewport;
  vp.zoomTo(zoom, null, true);
  vp.panTo(new OpenSeadragon.Point(x / sg.slide.width, y / sg.slide.width), true);
};

/* -- hover ---------------------------------------------------------------------------------------- */
let hoverTimer = null;
function onMove(pane, event) {
  clearTimeout(hoverTimer);
  hoverTimer = setTimeout(async () => {
    const { x, y } = toImage(pane, event.position);
    if (x < 0 || y < 0 || x >= sg.slide.width || y >= sg.slide.height) { $("hover").textContent = ""; return; }
    try {
      const at = await getJSON(`/api/slides/${enc(sg.slide.name)}/at?x=${x}&y=${y}`);
      const parts = [`x ${Math.round(x)}, y ${Math.round(y)}`];
      for (const [name, v] of Object.entries(at.values)) parts.push(`${name}: ${fmt(v.value)}`);
      if (at.tile) {
        const probs = (at.tile.probabilities || []).map((p, i) => `${(at.tile.labels || [])[i] || i} ${fmt(p)}`).join(", ");
        parts.push(`tile ${at.tile.tile} (${at.tile.class_label}; ${probs})`);
      }
      $("hover").textContent = parts.join(" · ");
    } catch (err) { $("hover").textContent = String(err.message || err); }
  }, 80);
}

/* -- clicks: an explained tile's panel, or an on-demand map ---------------------------------------- */
async function onClick(pane, event) {
  if (!event.quick) return;
  event.preventDefaultAction = true;
  const { x, y } = toImage(pane, event.position);
  if (x < 0 || y < 0 || x >= sg.slide.width || y >= sg.slide.height) return;
  const at = await getJSON(`/api/slides/${enc(sg.slide.name)}/at?x=${x}&y=${y}`);
  if (at.tile) await openTile(at.tile.tile);
  else await computeAt(x, y);
}

function probTable(labels, probs) {
  const table = el("table", {}, el("tr", {}, el("th", {}, "class"), el("th", {}, "probability")));
  (probs || []).forEach((p, i) => table.append(el("tr", {}, el("td", {}, (labels || [])[i] || String(i)), el("td", {}, fmt(p, 4)))));
  return table;
}

async function openTile(name) {
  const slide = sg.slide;
  const info = await getJSON(`/api/slides/${enc(slide.name)}/tiles/${enc(name)}`);
  const body = $("panel-body");
  body.replaceChildren();
  body.append(el("h3", {}, `Tile ${info.tile}`),
    el("div", {}, `level-0 x ${info.x}, y ${info.y}, ${info.size} px · class ${info.class_label}`),
    probTable(info.labels, info.probabilities));
  const base = `/api/slides/${enc(slide.name)}/tiles/${enc(name)}`;
  const maps = el("div", { class: "maps", id: "panel-maps" },
    el("figure", {}, el("img", { src: `${base}/image.png`, alt: "tile" }), el("figcaption", {}, "tile")));
  for (const method of Object.keys(info.methods)) {
    maps.append(el("figure", { "data-method": method },
      el("img", { src: `${base}/mask/${enc(method)}.png?overlay=1&cmap=inferno`, alt: method, class: "mask" }),
      el("figcaption", {}, `${method}: mean ${fmt(info.methods[method].mask_mean)}, top-10% mass ${fmt(info.methods[method].top10_mass)}`)));
  }
  body.append(maps);
  if (info.evaluation.length) {
    const keys = Object.keys(info.evaluation[0]).filter((k) => !["slide", "tile", "chunk"].includes(k));
    const table = el("table", { id: "metrics" }, el("tr", {}, ...keys.map((k) => el("th", {}, k))));
    for (const row of info.evaluation) table.append(el("tr", {}, ...keys.map((k) => el("td", {}, row[k] === "" ? "–" : (isNaN(Number(row[k])) ? row[k] : fmt(Number(row[k])))))));
    body.append(el("h3", {}, "Evaluation"), table);
  } else body.append(el("p", {}, "No evaluation rows for this tile."));
  $("panel").hidden = false;
  sg.panelTile = name;
}

async function computeAt(x, y) {
  if (!sg.run.model) { setBusy("no model: start the viewer with --model"); return; }
  const method = $("method").value;
  setBusy(`computing ${method}…`);
  const started = performance.now();
  try {
    const r = await getJSON(`/api/slides/${enc(sg.slide.name)}/compute`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ x, y, method }),
    });
    sg.lastCompute = r;
    sg.ondemand.push(r);
    for (const pane of sg.panes) addOndemandOverlay(pane, r);
    const body = $("panel-body");
    body.replaceChildren(
      el("h3", {}, `On-demand ${r.method} at x ${r.x}, y ${r.y}`),
      el("div", { id: "ondemand-time" }, `computed in ${r.seconds.toFixed(2)} s (${((performance.now() - started) / 1000).toFixed(2)} s with the request) · class ${r.class_label}`),
      probTable(r.labels, r.probabilities),
      el("div", { class: "maps" },
        el("figure", {}, el("img", { src: r.tile_png, alt: "tile" }), el("figcaption", {}, "tile")),
        el("figure", {}, el("img", { src: r.overlay_png, alt: "overlay", id: "ondemand-overlay" }), el("figcaption", {}, `${r.method} overlay`)),
        el("figure", {}, el("img", { src: r.mask_png, alt: "mask" }), el("figcaption", {}, `${r.method} mask`))));
    $("panel").hidden = false;
    setBusy("");
  } catch (err) {
    setBusy("");
    $("panel-body").replaceChildren(el("p", { class: "error" }, String(err.message || err)));
    $("panel").hidden = false;
  }
}

function addOndemandOverlay(pane, r) {
  const W = sg.slide.width;
  if (r.slide !== sg.slide.name) return;
  pane.viewer.addTiledImage({ tileSource: { type: "image", url: r.mask_png, buildPyramid: false },
                              x: r.x / W, y: r.y / W, width: r.size / W, opacity: 0.7 });
  const box = el("div", { class: "box ondemand", title: `${r.method} (on demand)` });
  pane.viewer.addOverlay({ element: box, location: new OpenSeadragon.Rect(r.x / W, r.y / W, r.size / W, r.size / W) });
  pane.boxes.push(box);
}

/* -- export ---------------------------------------------------------------------------------------- */
function exportPng() {
  const canvases = sg.panes.map((p) => p.viewer.drawer.canvas);
  const out = document.createElement("canvas");
  out.width = canvases.reduce((s, c) => s + c.width, 0);
  out.height = Math.max(...canvases.map((c) => c.height));
  const ctx = out.getContext("2d");
  let left = 0;
  for (const c of canvases) { ctx.drawImage(c, left, 0); left += c.width; }
  const url = out.toDataURL("image/png");
  sg.exported = url;
  const a = el("a", { href: url, download: `${sg.slide.name}-view.png` });
  document.body.append(a); a.click(); a.remove();
}

/* -- start ----------------------------------------------------------------------------------------- */
function showSlide(name) {
  for (const p of sg.panes) p.viewer.destroy();
  sg.panes = [];
  sg.ondemand = [];
  $("panes").replaceChildren();
  $("panel").hidden = true;
  sg.slide = sg.run.slides.find((s) => s.name === name);
  makePane(0);
  if ($("compare").checked) makePane(1);
}

async function main() {
  sg.run = await getJSON("/api/run");
  for (const s of sg.run.slides) $("slide").append(el("option", { value: s.name }, s.name));
  for (const m of sg.run.methods_available) $("method").append(el("option", { value: m }, m));
  $("method").disabled = !sg.run.model;
  $("slide").addEventListener("change", () => showSlide($("slide").value));
  $("compare").addEventListener("change", () => {
    if ($("compare").checked) { const p = makePane(1); p.viewer.addOnceHandler("open", () => syncFrom(sg.panes[0])); }
    else { const p = sg.panes.pop(); p.viewer.destroy(); p.root.remove(); }
  });
  $("boxes").addEventListener("change", () => sg.panes.forEach(drawBoxes));
  $("export").addEventListener("click", exportPng);
  $("close").addEventListener("click", () => { $("panel").hidden = true; });
  showSlide(sg.run.slides[0].name);
}

main().catch((err) => { $("hover").textContent = `error: ${err.message || err}`; $("hover").className = "error"; });
