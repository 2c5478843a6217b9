// Scores over time as an inline SVG line chart, one series per user, drawn with DOM calls.
const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 720;
const HEIGHT = 280;
const MARGIN = { top: 16, right: 20, bottom: 36, left: 56 };
const TICKS = 5;
// Colour-blind-safe palette (Okabe–Ito), dark enough on white.
export const COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"];

export function svg(name, attributes = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function scale(domainLow, domainHigh, rangeLow, rangeHigh) {
  const span = domainHigh - domainLow || 1;
  return (value) => rangeLow + ((value - domainLow) / span) * (rangeHigh - rangeLow);
}

function shortDate(ms) {
  return new Date(ms).toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

// history: [{user, job_id, performance, finished_at}], oldest first.
export function scoreChart(history, title) {
  const points = history.map((h) => ({ ...h, t: Date.parse(h.finished_at) }));
  const users = [...new Set(points.map((p) => p.user))];
  const colour = new Map(users.map((user, i) => [user, COLOURS[i % COLOURS.length]]));
  const root = svg("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`, width: WIDTH, height: HEIGHT, class: "chart", role: "img",
    "aria-label": `${title}: ${points.length} scores from ${users.length} users`,
  });
  root.append(svg("title", {}, title));
  const ts = points.map((p) => p.t);
  const ys = points.map((p) => p.performance);
  let [tLow, tHigh] = [Math.min(...ts), Math.max(...ts)];
  let [yLow, yHigh] = [Math.min(...ys), Math.max(...ys)];
  if (tLow === tHigh) { tLow -= 60_000; tHigh += 60_000; }
  if (yLow === yHigh) { yLow -= 0.5; yHigh += 0.5; }
  const x = scale(tLow, tHigh, MARGIN.left, WIDTH - MARGIN.right);
  const y = scale(yLow, yHigh, HEIGHT - MARGIN.bottom, MARGIN.top);
  const axis = { stroke: "#767676", "stroke-width": 1 };
  root.append(svg("line", { x1: MARGIN.left, y1: HEIGHT - MARGIN.bottom, x2: WIDTH - MARGIN.right, y2: HEIGHT - MARGIN.bottom, ...axis }));
  root.append(svg("line", { x1: MARGIN.left, y1: MARGIN.top, x2: MARGIN.left, y2: HEIGHT - MARGIN.bottom, ...axis }));
  for (let i = 0; i <= TICKS; i++) {
    const value = yLow + ((yHigh - yLow) * i) / TICKS;
    const at = y(value);
    root.append(svg("line", { x1: MARGIN.left, y1: at, x2: WIDTH - MARGIN.right, y2: at, stroke: "#e5e5e5" }));
    root.append(svg("text", { x: MARGIN.left - 6, y: at + 4, "text-anchor": "end", "font-size": 11, fill: "#333" }, value.toPrecision(3)));
  }
  root.append(svg("text", { x: MARGIN.left, y: HEIGHT - 10, "font-size": 11, fill: "#333" }, shortDate(tLow)));
  root.append(svg("text", { x: WIDTH - MARGIN.right, y: HEIGHT - 10, "text-anchor": "end", "font-size": 11, fill: "#333" }, shortDate(tHigh)));
  for (const user of users) {
    const mine = points.filter((p) => p.user === user);
    const stroke = colour.get(user);
    if (mine.length > 1) {
      const d = mine.map((p, i) => `${i ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.performance).toFixed(1)}`).join(" ");
      root.append(svg("path", { d, fill: "none", stroke, "stroke-width": 2 }));
    }
    for (const p of mine) {
      const dot = svg("circle", { cx: x(p.t).toFixed(1), cy: y(p.performance).toFixed(1), r: 4, fill: stroke });
      dot.append(svg("title", {}, `${user}: ${p.performance} (${p.finished_at}, job ${p.job_id})`));
      root.append(dot);
    }
  }
  return { chart: root, colour };
}
