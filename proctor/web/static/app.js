// The proctor dashboard: hash routes, views built with DOM calls (text only, never HTML),
// live updates by polling the API and streaming logs.
import { ApiError, json, query, request, session, streamText } from "./api.js";
import { scoreChart, svg } from "./chart.js";
import { filesOfEntry, packContext, relativeToTop } from "./tar.js";

const POLL_MS = 2000; // the job list refreshes while anything may change
const WAIT_SECONDS = 25; // the job page asks the server to answer once the job changes
const TICK_MS = 1000; // the job page's "so far" durations
const BOARD_POLL_MS = 5000;
const PAGE_SIZE = 20;
const STATUSES = ["queued", "building", "scanning", "running", "succeeded", "failed", "cancelled"];
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
const ARCHIVE = /\.(tar|tar\.gz|tgz)$/i;

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const announcer = document.getElementById("announcer");
let cleanup = () => {};
let flash = null; // one message carried to the next view (e.g. "submitted job …")

// el("p", {class: "x"}, "text", child): attributes and text only; never parses HTML.
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
  }
  return node;
}

function announce(text) {
  announcer.textContent = text;
}

function formatDuration(ms) {
  if (!Number.isFinite(ms) || ms < 0) return "";
  const seconds = ms / 1000;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function formatTime(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function formatScore(value) {
  return value === null || value === undefined ? "—" : String(Number(value.toPrecision(6)));
}

function statusCell(status) {
  return el("span", { class: "status", "data-status": status }, status);
}

function errorText(error) {
  return error instanceof ApiError ? error.message : `Something went wrong: ${error.message}`;
}

// Runs fn now and every ms until stop() (a failed call shows its error and keeps polling).
function poller(fn, ms) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    try {
      await fn();
    } finally {
      if (!stopped) timer = setTimeout(tick, ms);
    }
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function render(title, ...children) {
  document.title = `${title} · proctor`;
  main.replaceChildren(el("h1", {}, title), ...children);
}

function takeFlash() {
  const message = flash;
  flash = null;
  return message ? el("p", { class: "notice", role: "status", id: "flash" }, message) : null;
}

// ---- sign-in ----------------------------------------------------------------------------

function signInView(message) {
  const token = el("input", { id: "token", type: "password", autocomplete: "off", required: true, "aria-describedby": "token-hint" });
  const error = el("p", { id: "sign-in-error", class: "error", role: "alert" }, message ?? "");
  const button = el("button", { type: "submit", id: "sign-in" }, "Sign in");
  const form = el("form", { id: "sign-in-form", novalidate: true },
    el("label", { for: "token" }, "API token"),
    token,
    el("p", { id: "token-hint", class: "hint" }, "Your token is kept in this browser tab only, until you close it or sign out."),
    button, error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const value = token.value.trim();
    if (!value) {
      error.textContent = "Enter your API token.";
      return;
    }
    button.disabled = true;
    error.textContent = "";
    try {
      await request(`/jobs${query({ limit: 1 })}`, { token: value });
      session.save(value);
      announce("Signed in");
      const target = location.hash && !location.hash.startsWith("#/sign-in") ? location.hash : "#/jobs";
      if (location.hash === target) route();
      else location.hash = target;
    } catch (failure) {
      error.textContent = errorText(failure);
      button.disabled = false;
      token.focus();
    }
  });
  nav.hidden = true;
  render("Sign in", form);
  token.focus();
  return () => {};
}

// ---- jobs -------------------------------------------------------------------------------

function jobsView(params) {
  const status = STATUSES.includes(params.get("status")) ? params.get("status") : "";
  const cursors = [null]; // cursors[i] is the cursor of page i; the first page has none
  let page = 0;
  const rows = new Map(); // job id -> {row, status}
  const filter = el("select", { id: "status-filter" },
    el("option", { value: "" }, "All"),
    ...STATUSES.map((s) => el("option", { value: s, selected: s === status }, s)));
  filter.addEventListener("change", () => {
    location.hash = filter.value ? `#/jobs?status=${filter.value}` : "#/jobs";
  });
  const body = el("tbody");
  const table = el("table", { id: "jobs" },
    el("caption", { class: "visually-hidden" }, "Your jobs, newest first"),
    el("thead", {}, el("tr", {},
      ...["Job", "Name", "Owner", "Status", "Dataset"].map((h) => el("th", { scope: "col" }, h)),
      el("th", { scope: "col", class: "num" }, "Performance"),
      el("th", { scope: "col" }, "Submitted"))),
    body);
  const empty = el("p", { id: "jobs-empty", hidden: true }, "No jobs yet. ", el("a", { href: "#/submit" }, "Submit one"), ".");
  const error = el("p", { class: "error", role: "alert" });
  const newer = el("button", { type: "button", class: "secondary", id: "newer" }, "← Newer");
  const older = el("button", { type: "button", class: "secondary", id: "older" }, "Older →");
  let refresh;
  newer.addEventListener("click", () => { page -= 1; rows.clear(); body.replaceChildren(); refresh(); });
  older.addEventListener("click", () => { page += 1; rows.clear(); body.replaceChildren(); refresh(); });

  function row(job) {
    const cells = {
      link: el("td", { class: "mono" }, el("a", { href: `#/jobs/${job.id}` }, job.id)),
      name: el("td"), owner: el("td"), status: el("td"), dataset: el("td"),
      performance: el("td", { class: "num" }), created: el("td"),
    };
    const tr = el("tr", { "data-job-id": job.id }, ...Object.values(cells));
    return { tr, cells, status: null };
  }

  function update(entry, job) {
    const { cells } = entry;
    cells.name.textContent = job.name ?? "";
    cells.owner.textContent = job.owner ?? "";
    cells.dataset.textContent = job.dataset ?? "";
    cells.performance.textContent = formatScore(job.performance);
    cells.created.textContent = formatTime(job.created_at);
    if (entry.status !== job.status) {
      if (entry.status !== null) announce(`Job ${job.name ?? job.id} is now ${job.status}`);
      entry.status = job.status;
      cells.status.replaceChildren(statusCell(job.status));
    }
  }

  refresh = async () => {
    try {
      const result = await json(`/jobs${query({ status, limit: PAGE_SIZE, cursor: cursors[page] })}`);
      cursors[page + 1] = result.next_cursor;
      const seen = new Set();
      const ordered = result.items.map((job) => {
        seen.add(job.id);
        let entry = rows.get(job.id);
        if (!entry) rows.set(job.id, (entry = row(job)));
        update(entry, job);
        return entry.tr;
      });
      for (const id of [...rows.keys()]) if (!seen.has(id)) rows.delete(id);
      const current = [...body.children];
      if (current.length !== ordered.length || current.some((tr, i) => tr !== ordered[i])) {
        body.replaceChildren(...ordered);
      }
      empty.hidden = result.items.length > 0 || page > 0;
      table.hidden = result.items.length === 0 && page === 0;
      newer.disabled = page === 0;
      older.disabled = !result.next_cursor;
      error.textContent = "";
    } catch (failure) {
      error.textContent = errorText(failure);
    }
  };
  render("Jobs", takeFlash() ?? "",
    el("div", { class: "toolbar" }, el("div", {}, el("label", { for: "status-filter" }, "Status"), filter)),
    table, empty, el("div", { class: "pager" }, newer, older), error);
  return poller(refresh, POLL_MS);
}

// ---- one job ----------------------------------------------------------------------------

function timelineItems(job) {
  const entries = Object.entries(job.timeline ?? {})
    .map(([state, at]) => ({ state, at, t: Date.parse(at) }))
    .sort((a, b) => a.t - b.t);
  return entries.map((entry, i) => {
    const next = entries[i + 1];
    let duration = "";
    if (next) duration = formatDuration(next.t - entry.t);
    else if (!FINAL.has(entry.state)) duration = `${formatDuration(Date.now() - entry.t)} so far`;
    return el("li", { "data-state": entry.state },
      statusCell(entry.state),
      duration ? ` ${duration}` : "",
      el("span", { class: "when" }, el("time", { datetime: entry.at }, formatTime(entry.at))));
  });
}

function facts(pairs) {
  const list = el("dl", { class: "facts" });
  for (const [term, value, id] of pairs) list.append(el("dt", {}, term), el("dd", { id }, value));
  return list;
}

function findingsTable(findings) {
  if (!findings.length) return el("p", {}, "No findings.");
  return el("table", { id: "findings" },
    el("thead", {}, el("tr", {}, ...["Severity", "Rule", "Source", "Where", "Message"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...findings.map((f) => el("tr", {},
      el("td", {}, f.severity + (f.accepted ? " (accepted)" : "")),
      el("td", { class: "mono" }, f.rule),
      el("td", {}, f.source ?? ""),
      el("td", { class: "mono" }, [f.path, f.line ? `line ${f.line}` : null, f.package, f.installed_version && `${f.installed_version} → ${f.fixed_version ?? "no fix"}`].filter(Boolean).join(" · ")),
      el("td", {}, f.message)))));
}

function jobView(id) {
  const controller = new AbortController();
  const statusLine = el("p", { id: "job-status", "aria-live": "polite" });
  const cancel = el("button", { type: "button", class: "danger", id: "cancel", hidden: true }, "Cancel job");
  const actionError = el("p", { class: "error", role: "alert", id: "job-error-message" });
  const summary = el("section", { "aria-labelledby": "summary-h" });
  const timeline = el("ol", { class: "timeline", id: "timeline" });
  const problem = el("section", { id: "job-error", hidden: true, "aria-labelledby": "error-h" });
  const findings = el("div");
  const logs = { build: el("pre", { class: "log", id: "log-build", tabindex: 0 }), run: el("pre", { class: "log", id: "log-run", tabindex: 0 }) };
  let last = null;
  let shown = null; // the job as last shown, for the ticker
  let status = null;
  let logsStarted = false;

  function show(job) {
    shown = job;
    timeline.replaceChildren(...timelineItems(job)); // "so far" grows while the job is active
    const text = JSON.stringify(job);
    if (text === last) return;
    last = text;
    document.title = `${job.name ?? job.id} · proctor`;
    main.querySelector("h1").textContent = job.name ? `Job ${job.name}` : `Job ${job.id}`;
    if (status !== null && status !== job.status) announce(`Job is now ${job.status}`);
    status = job.status;
    statusLine.replaceChildren("Status: ", statusCell(job.status));
    cancel.hidden = FINAL.has(job.status);
    const metrics = Object.entries(job.metrics ?? {});
    summary.replaceChildren(
      el("h2", { id: "summary-h" }, "Performance"),
      facts([
        ["Performance", formatScore(job.performance), "performance"],
        ["Job", job.id],
        ["Owner", job.owner ?? ""],
        ["Dataset", job.dataset ?? "none"],
        ["Submitted", formatTime(job.created_at)],
        ["Run time", job.started_at && job.finished_at ? formatDuration(Date.parse(job.finished_at) - Date.parse(job.started_at)) : "—"],
        ["Total", job.finished_at ? formatDuration(Date.parse(job.finished_at) - Date.parse(job.created_at)) : "—"],
        ["Exit code", job.exit_code ?? "—"],
        ["Timeout", `${job.timeout} s`],
        ["Attempts", job.attempts],
      ]),
      metrics.length
        ? el("table", { id: "metrics" },
          el("caption", {}, "Metrics"),
          el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Metric"), el("th", { scope: "col", class: "num" }, "Value"))),
          el("tbody", {}, ...metrics.map(([k, v]) => el("tr", {}, el("td", { class: "mono" }, k), el("td", { class: "num" }, formatScore(v))))))
        : el("p", {}, "No other metrics."));
    problem.hidden = !job.error;
    if (job.error) {
      problem.replaceChildren(el("h2", { id: "error-h" }, "Error"),
        el("div", { class: "error-box" }, el("p", { class: "mono" }, job.error.code), el("p", { id: "error-text" }, job.error.message)));
    }
    findings.replaceChildren(findingsTable(job.findings ?? []));
  }

  async function follow(stream, final) {
    const target = logs[stream];
    const append = (text) => {
      const atBottom = target.scrollTop + target.clientHeight >= target.scrollHeight - 4;
      target.append(document.createTextNode(text));
      if (atBottom) target.scrollTop = target.scrollHeight;
    };
    try {
      if (final) append(await (await request(`/jobs/${id}/logs${query({ stream })}`, { signal: controller.signal })).text());
      else await streamText(`/jobs/${id}/logs${query({ stream, follow: true })}`, append, controller.signal);
      if (!target.textContent) target.textContent = "(no output)";
    } catch (failure) {
      if (failure.name !== "AbortError") append(`\n[${errorText(failure)}]`);
    }
  }

  // "done" (final, gone, or left), "again" (ask at once), or "later" (it failed: wait).
  async function refresh() {
    try {
      // Known and not final: the server answers once the status changes (no polling).
      const wait = status && !FINAL.has(status) ? query({ wait: WAIT_SECONDS, after: status }) : "";
      const job = await json(`/jobs/${id}${wait}`, { signal: controller.signal });
      show(job);
      if (!logsStarted) {
        logsStarted = true;
        follow("build", FINAL.has(job.status));
        follow("run", FINAL.has(job.status));
      }
      return FINAL.has(job.status) ? "done" : "again";
    } catch (failure) {
      if (failure.name === "AbortError") return "done";
      actionError.textContent = errorText(failure);
      return failure instanceof ApiError && failure.status === 404 ? "done" : "later";
    }
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      show(await json(`/jobs/${id}/cancel`, { method: "POST" }));
      announce("Cancel requested");
    } catch (failure) {
      actionError.textContent = errorText(failure);
    } finally {
      cancel.disabled = false;
    }
  });

  render(`Job ${id}`,
    el("p", {}, el("a", { href: "#/jobs" }, "← All jobs")),
    el("div", { class: "head-row" }, statusLine, cancel), actionError,
    el("h2", {}, "Timeline"), timeline,
    problem, summary,
    el("h2", {}, "Findings"), findings,
    el("h2", {}, "Logs"),
    el("div", { class: "logs" },
      el("section", { "aria-label": "Build log" }, el("h3", {}, "Build"), logs.build),
      el("section", { "aria-label": "Run log" }, el("h3", {}, "Run"), logs.run)));

  let timer = null;
  const loop = async () => {
    const next = await refresh();
    if (next === "done" || controller.signal.aborted) return;
    timer = setTimeout(loop, next === "later" ? POLL_MS : 0); // after a failure, as a poll would
  };
  loop();
  const ticker = setInterval(() => {
    if (shown && !FINAL.has(status)) timeline.replaceChildren(...timelineItems(shown));
  }, TICK_MS);
  return () => {
    controller.abort();
    clearTimeout(timer);
    clearInterval(ticker);
  };
}

// ---- submit -----------------------------------------------------------------------------

function submitView() {
  let chosen = null; // {file, name} or {files: [{name, file}]}
  const selection = el("p", { id: "selection", "aria-live": "polite" }, "Nothing chosen yet.");
  const fileInput = el("input", { type: "file", id: "file" });
  const folderInput = el("input", { type: "file", id: "folder", webkitdirectory: true, multiple: true });
  const dataset = el("select", { id: "dataset" }, el("option", { value: "" }, "No dataset"));
  const name = el("input", { type: "text", id: "name", maxlength: 200, autocomplete: "off" });
  const timeout = el("input", { type: "number", id: "timeout", min: 1, step: "any", inputmode: "numeric", "aria-describedby": "timeout-hint" });
  const error = el("p", { id: "submit-error", class: "error", role: "alert" });
  const button = el("button", { type: "submit", id: "submit" }, "Submit");

  function choose(value, description) {
    chosen = value;
    selection.textContent = description;
    error.textContent = "";
  }
  function chooseFile(file) {
    const kind = ARCHIVE.test(file.name) ? "archive" : "Dockerfile";
    choose({ file, name: file.name }, `${kind}: ${file.name} (${file.size} bytes)`);
  }
  function chooseFolder(files) {
    if (!files.length) return choose(null, "That folder is empty.");
    choose({ files }, `Folder: ${files.length} files`);
  }

  fileInput.addEventListener("change", () => {
    if (fileInput.files.length) chooseFile(fileInput.files[0]);
  });
  folderInput.addEventListener("change", () => {
    chooseFolder([...folderInput.files].map((file) => ({ name: relativeToTop(file.webkitRelativePath || file.name), file })));
  });

  const zone = el("div", { class: "dropzone", id: "dropzone" },
    el("label", { for: "file" }, "Dockerfile or archive (.tar, .tar.gz)"), fileInput,
    el("label", { for: "folder" }, "Or a folder (its build context)"), folderInput,
    el("p", { class: "hint" }, "You can also drop a Dockerfile, an archive or a folder here. A folder is packed in your browser, honouring its .dockerignore."),
    selection);
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const entries = [...event.dataTransfer.items].map((item) => item.webkitGetAsEntry?.()).filter(Boolean);
    try {
      if (entries.length === 1 && entries[0].isDirectory) {
        const files = await filesOfEntry(entries[0]);
        chooseFolder(files.map((f) => ({ ...f, name: relativeToTop(f.name) })));
      } else if (event.dataTransfer.files.length === 1) {
        chooseFile(event.dataTransfer.files[0]);
      } else if (entries.length > 1) {
        const files = [];
        for (const entry of entries) files.push(...(await filesOfEntry(entry)));
        chooseFolder(files);
      }
    } catch (failure) {
      error.textContent = `The dropped files cannot be read: ${failure.message}`;
    }
  });

  const form = el("form", { id: "submit-form", novalidate: true },
    zone,
    el("label", { for: "dataset" }, "Dataset"), dataset,
    el("label", { for: "name" }, "Name (optional)"), name,
    el("label", { for: "timeout" }, "Timeout in seconds (optional)"), timeout,
    el("p", { id: "timeout-hint", class: "hint" }, "Empty: the server's default."),
    el("p", {}, button), error);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!chosen) {
      error.textContent = "Choose or drop a Dockerfile, an archive or a folder first.";
      return;
    }
    button.disabled = true;
    error.textContent = "";
    try {
      const data = new FormData();
      if (chosen.files) {
        selection.textContent = "Packing the folder…";
        const packed = await packContext(chosen.files);
        selection.textContent = `Folder: ${packed.count} files packed, ${packed.left} left out by .dockerignore`;
        data.append("file", packed.blob, "context.tar.gz");
      } else {
        data.append("file", chosen.file, chosen.name);
      }
      if (dataset.value) data.append("dataset", dataset.value);
      if (name.value.trim()) data.append("name", name.value.trim());
      if (timeout.value.trim()) data.append("timeout", timeout.value.trim());
      const job = await json("/jobs", { method: "POST", body: data });
      flash = `Submitted job ${job.name ? `${job.name} (${job.id})` : job.id}.`;
      location.hash = "#/jobs";
    } catch (failure) {
      error.textContent = errorText(failure);
      button.disabled = false;
    }
  });

  render("Submit a job", form);
  json("/datasets").then((result) => {
    for (const d of result.items) dataset.append(el("option", { value: d.name }, `${d.name}${d.description ? ` — ${d.description}` : ""}`));
  }).catch((failure) => { error.textContent = errorText(failure); });
  return () => {};
}

// ---- leaderboard ------------------------------------------------------------------------

const NO_DATASET = "-";

function leaderboardView(params) {
  const picker = el("select", { id: "board-dataset" });
  const direction = el("p", { id: "direction", class: "hint" });
  const board = el("div", { id: "board" });
  const chartBox = el("div", { id: "chart" });
  const error = el("p", { class: "error", role: "alert" });
  let chosen = params.get("dataset");
  let last = null;
  picker.addEventListener("change", () => { location.hash = `#/leaderboard?dataset=${encodeURIComponent(picker.value)}`; });
  render("Leaderboard",
    el("div", { class: "toolbar" }, el("div", {}, el("label", { for: "board-dataset" }, "Dataset"), picker)),
    direction, board, el("h2", {}, "Scores over time"), chartBox, error);

  async function refresh() {
    try {
      const path = `/leaderboard${chosen && chosen !== NO_DATASET ? query({ dataset: chosen }) : ""}`;
      const result = await json(path);
      const text = JSON.stringify(result);
      if (text === last) return;
      last = text;
      direction.textContent = result.direction === "lower" ? "Lower scores rank first." : "Higher scores rank first.";
      const { chart, colour } = result.history.length
        ? scoreChart(result.history, `Scores on ${result.dataset ?? "no dataset"}`)
        : { chart: null, colour: new Map() };
      board.replaceChildren(result.entries.length
        ? el("table", { id: "leaderboard" },
          el("caption", { class: "visually-hidden" }, "Each user's best job, best first"),
          el("thead", {}, el("tr", {}, el("th", { scope: "col", class: "num" }, "Rank"), el("th", { scope: "col" }, "User"),
            el("th", { scope: "col", class: "num" }, "Score"), el("th", { scope: "col" }, "Job"), el("th", { scope: "col" }, "Finished"))),
          el("tbody", {}, ...result.entries.map((e) => el("tr", { "data-user": e.user },
            el("td", { class: "num" }, e.rank), el("td", {}, e.user), el("td", { class: "num" }, formatScore(e.performance)),
            el("td", { class: "mono" }, el("a", { href: `#/jobs/${e.job_id}` }, e.job_id)), el("td", {}, formatTime(e.finished_at))))))
        : el("p", {}, "No scores yet."));
      if (!chart) {
        chartBox.replaceChildren(el("p", {}, "No scores to chart yet."));
      } else {
        const legend = el("ul", { class: "legend", "aria-label": "Users" },
          ...[...colour].map(([user, fill]) => el("li", {},
            (() => { const s = svg("svg", { class: "swatch", viewBox: "0 0 10 10", "aria-hidden": "true" }); s.append(svg("rect", { width: 10, height: 10, fill })); return s; })(),
            user)));
        chartBox.replaceChildren(chart, legend);
      }
      error.textContent = "";
    } catch (failure) {
      error.textContent = errorText(failure);
    }
  }

  let stop = () => {};
  json("/datasets").then((result) => {
    const names = result.items.map((d) => d.name);
    if (chosen === null) chosen = names[0] ?? NO_DATASET;
    picker.replaceChildren(
      ...names.map((n) => el("option", { value: n, selected: n === chosen }, n)),
      el("option", { value: NO_DATASET, selected: chosen === NO_DATASET }, "(no dataset)"));
    stop = poller(refresh, BOARD_POLL_MS);
  }).catch((failure) => { error.textContent = errorText(failure); });
  return () => stop();
}

// ---- routing ----------------------------------------------------------------------------

function route() {
  cleanup();
  const [path, search] = (location.hash.slice(1) || "/jobs").split("?");
  const params = new URLSearchParams(search ?? "");
  if (!session.token()) {
    cleanup = signInView();
    return;
  }
  nav.hidden = false;
  const section = path.split("/")[1];
  for (const link of nav.querySelectorAll("a")) {
    link.toggleAttribute("aria-current", link.getAttribute("href") === `#/${section}`);
    if (link.hasAttribute("aria-current")) link.setAttribute("aria-current", "page");
  }
  const job = path.match(/^\/jobs\/([A-Za-z0-9_-]+)$/);
  if (job) cleanup = jobView(job[1]);
  else if (path === "/submit") cleanup = submitView();
  else if (path === "/leaderboard") cleanup = leaderboardView(params);
  else cleanup = jobsView(params);
  main.focus({ preventScroll: true });
}

document.getElementById("sign-out").addEventListener("click", () => {
  session.clear();
  announce("Signed out");
  cleanup();
  cleanup = signInView();
});
window.addEventListener("proctor:unauthorized", () => {
  session.clear();
  cleanup();
  cleanup = signInView("Your token was refused; sign in again.");
});
window.addEventListener("hashchange", route);
route();
