// A build context made in the browser: a dropped folder becomes a gzip ustar archive,
// leaving out what its .dockerignore excludes (the CLI does the same before uploading).
const BLOCK = 512;
const NAME_MAX = 100;
const PREFIX_MAX = 155;
const ALWAYS_SENT = new Set(["Dockerfile", ".dockerignore"]); // Docker sends both even if ignored
const encoder = new TextEncoder();

// One glob segment to a regular expression: * and ? stay within a path segment.
function segmentRegex(segment) {
  let out = "";
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i];
    if (c === "*") out += "[^/]*";
    else if (c === "?") out += "[^/]";
    else if (c === "\\" && i + 1 < segment.length) out += escape(segment[++i]);
    else if (c === "[") {
      const end = segment.indexOf("]", i + 2);
      if (end === -1) { out += "\\["; continue; }
      let body = segment.slice(i + 1, end);
      if (body.startsWith("!")) body = "^" + body.slice(1);
      out += "[" + body.replace(/\\/g, "\\\\") + "]";
      i = end;
    } else out += escape(c);
  }
  return out;
}

function escape(c) {
  return c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

// Docker's patterns are anchored at the context root; ** spans any number of directories.
function patternRegex(pattern) {
  const parts = pattern.split("/");
  let out = "";
  parts.forEach((part, index) => {
    const last = index === parts.length - 1;
    if (part === "**") out += last ? ".*" : "(?:[^/]+/)*";
    else out += segmentRegex(part) + (last ? "" : "/");
  });
  return new RegExp(`^${out}$`);
}

function normalise(pattern) {
  const parts = [];
  for (const part of pattern.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return parts.join("/");
}

export function parseDockerignore(text) {
  const rules = [];
  for (let line of text.replace(/^\uFEFF/, "").split(/\r?\n/)) {
    line = line.trim();
    if (!line || line.startsWith("#")) continue;
    const negate = line.startsWith("!");
    const pattern = normalise((negate ? line.slice(1) : line).trim());
    if (pattern) rules.push({ negate, regex: patternRegex(pattern) });
  }
  return rules;
}

// Docker's rule: each pattern matching the path or a parent directory decides in turn.
export function excluded(name, rules) {
  if (ALWAYS_SENT.has(name)) return false;
  const parts = name.split("/");
  const candidates = parts.map((_, depth) => parts.slice(0, depth + 1).join("/"));
  let out = false;
  for (const rule of rules) {
    if (candidates.some((candidate) => rule.regex.test(candidate))) out = !rule.negate;
  }
  return out;
}

function field(header, offset, length, text) {
  const bytes = encoder.encode(text);
  if (bytes.length > length) throw new Error(`tar field too long: ${text}`);
  header.set(bytes, offset);
}

function octal(header, offset, length, value) {
  field(header, offset, length, value.toString(8).padStart(length - 1, "0") + "\0");
}

function splitName(name) {
  if (encoder.encode(name).length <= NAME_MAX) return ["", name];
  for (let cut = name.indexOf("/"); cut !== -1; cut = name.indexOf("/", cut + 1)) {
    const prefix = name.slice(0, cut);
    const rest = name.slice(cut + 1);
    if (encoder.encode(prefix).length <= PREFIX_MAX && encoder.encode(rest).length <= NAME_MAX) {
      return [prefix, rest];
    }
  }
  throw new Error(`the path ${name} is too long for a tar archive`);
}

function header(name, size, mtimeSeconds) {
  const block = new Uint8Array(BLOCK);
  const [prefix, rest] = splitName(name);
  field(block, 0, NAME_MAX, rest);
  octal(block, 100, 8, 0o644);
  octal(block, 108, 8, 0);
  octal(block, 116, 8, 0);
  octal(block, 124, 12, size);
  octal(block, 136, 12, mtimeSeconds);
  block.fill(0x20, 148, 156); // the checksum counts its own field as spaces
  field(block, 156, 1, "0");
  field(block, 257, 6, "ustar\0");
  field(block, 263, 2, "00");
  field(block, 265, 32, "root");
  field(block, 297, 32, "root");
  field(block, 345, PREFIX_MAX, prefix);
  const sum = block.reduce((total, byte) => total + byte, 0);
  field(block, 148, 8, sum.toString(8).padStart(6, "0") + "\0 ");
  return block;
}

// files: [{ name: "dir/file", file: File }]; returns a gzip-compressed ustar Blob.
export async function packContext(files) {
  const ignore = files.find((entry) => entry.name === ".dockerignore");
  const rules = ignore ? parseDockerignore(await ignore.file.text()) : [];
  const kept = files
    .filter((entry) => !excluded(entry.name, rules))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const parts = [];
  for (const { name, file } of kept) {
    parts.push(header(name, file.size, Math.floor(file.lastModified / 1000)));
    parts.push(file);
    const padding = (BLOCK - (file.size % BLOCK)) % BLOCK;
    if (padding) parts.push(new Uint8Array(padding));
  }
  parts.push(new Uint8Array(BLOCK * 2));
  const tar = new Blob(parts);
  const gzip = tar.stream().pipeThrough(new CompressionStream("gzip"));
  return { blob: await new Response(gzip).blob(), count: kept.length, left: files.length - kept.length };
}

// Drops a folder's top directory name, so the Dockerfile sits at the context root.
export function relativeToTop(path) {
  const slash = path.indexOf("/");
  return slash === -1 ? path : path.slice(slash + 1);
}

// Every file under a dropped directory entry (the File and Directory Entries API).
export async function filesOfEntry(entry, base = "") {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    return [{ name: base + entry.name, file }];
  }
  const reader = entry.createReader();
  const children = [];
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) break;
    children.push(...batch);
  }
  const out = [];
  for (const child of children) out.push(...(await filesOfEntry(child, `${base}${entry.name}/`)));
  return out;
}
