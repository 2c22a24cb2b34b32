// The public proof-of-collateral page (gateway/api/collateral_page.py): what the page checks
// in the browser, the checkpoint's age, the chart's read-out and the copy button. Served by
// the gateway itself; it fetches nothing: everything it checks is embedded in the page.
"use strict";

(() => {
  const te = new TextEncoder();

  const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const hex = (u) => Array.from(u, (b) => b.toString(16).padStart(2, "0")).join("");
  const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  };

  const sha256 = async (...parts) =>
    new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
  const leafHash = (entry) => sha256(Uint8Array.of(0), entry);
  const nodeHash = (left, right) => sha256(Uint8Array.of(1), left, right);

  const bitLength = (n) => (n === 0n ? 0 : n.toString(2).length);
  const popCount = (n) => n.toString(2).split("1").length - 1;

  // RFC 9162 2.1.3.2, as gateway/collateral/tlog.py's root_from_inclusion: the root that
  // `proof` binds the leaf hash at `index` to, in a tree of `size` leaves.
  async function rootFromInclusion(index, size, leaf, proof) {
    if (index < 0n || index >= size) throw new Error(`index ${index} is not in a tree of ${size}`);
    const inner = bitLength(index ^ (size - 1n));
    const border = popCount(index >> BigInt(inner));
    if (proof.length !== inner + border) {
      throw new Error(`the proof has ${proof.length} hashes, not ${inner + border}`);
    }
    let h = leaf;
    for (let i = 0; i < inner; i++) {
      h = (index >> BigInt(i)) & 1n ? await nodeHash(proof[i], h) : await nodeHash(h, proof[i]);
    }
    for (let i = inner; i < proof.length; i++) h = await nodeHash(proof[i], h);
    return h;
  }

  // A signed note: text, a blank line, lines "— <name> base64(key id || signature)".
  function parseNote(note) {
    const split = note.indexOf("\n\n");
    const text = note.slice(0, split + 1);
    const lines = text.slice(0, -1).split("\n");
    const signatures = note
      .slice(split + 2)
      .split("\n")
      .filter((l) => l.startsWith("\u2014 "))
      .map((l) => {
        const [name, sig] = l.slice(2).split(" ");
        const raw = b64(sig);
        return { name, keyId: hex(raw.slice(0, 4)), signature: raw.slice(4) };
      });
    return { text, size: BigInt(lines[1]), root: b64(lines[2]), signatures };
  }

  // <name>+<hex key id>+base64(type || 32-byte Ed25519 public key): type 0x01 for a note
  // signature, 0x04 for a cosignature/v1 (c2sp.org/signed-note, tlog-cosignature).
  async function ed25519Key(vkey, type) {
    const first = vkey.indexOf("+");
    const second = vkey.indexOf("+", first + 1);
    const [name, keyId, key64] = [vkey.slice(0, first), vkey.slice(first + 1, second),
      vkey.slice(second + 1)];  // the key's base64 may hold "+" too
    const raw = b64(key64);
    if (raw.length !== 33 || raw[0] !== type) {
      throw new Error(`${name}'s key is not a type 0x0${type} Ed25519 key`);
    }
    const id = (await sha256(te.encode(name + "\n"), raw)).slice(0, 4);
    if (hex(id) !== keyId) throw new Error(`${name}'s key id does not match its name and key`);
    const key = await crypto.subtle.importKey("raw", raw.slice(1), { name: "Ed25519" }, false, [
      "verify",
    ]);
    return { name, keyId, key };
  }

  const lineOf = (note, k) => note.signatures.find((g) => g.name === k.name && g.keyId === k.keyId);

  // cosignature/v1: 8-byte big-endian time || Ed25519 over "cosignature/v1\ntime <t>\n" + text.
  async function cosigned(note, k) {
    const line = lineOf(note, k);
    if (!line) return "missing";
    if (line.signature.length !== 72) return "bad";
    const t = new DataView(line.signature.buffer, line.signature.byteOffset, 8).getBigUint64(0);
    const message = te.encode(`cosignature/v1\ntime ${t}\n${note.text}`);
    const good = await crypto.subtle.verify({ name: "Ed25519" }, k.key, line.signature.slice(8),
      message);
    return good ? "ok" : "bad";
  }

  const kzt = (tiyn) => {
    const n = BigInt(tiyn);
    const abs = n < 0n ? -n : n;
    const whole = (abs / 100n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return `${n < 0n ? "\u2212" : ""}${whole}.${(abs % 100n).toString().padStart(2, "0")}`;
  };

  function mark(item, state, text) {
    item.className = state;
    item.textContent = text;
  }

  async function browserCheck(data) {
    const box = document.getElementById("browser-check");
    if (!box) return;
    const item = (name) => box.querySelector(`li[data-check="${name}"]`);
    const results = [];
    const set = (name, state, text) => {
      mark(item(name), state, text);
      results.push(state);
    };
    if (!(globalThis.crypto && crypto.subtle)) {
      for (const name of ["inclusion", "figures", "signature", "cosignatures"]) {
        set(name, "skip", "Not checked: this browser offers WebCrypto only to pages served " +
          "over HTTPS (or from this machine). Use the verifier below.");
      }
      box.dataset.check = "skipped";
      return;
    }
    const note = parseNote(data.note);
    const s = data.statement;
    if (s === null) {
      set("inclusion", "skip", "Not checked: the log holds no reserve statement yet.");
      set("figures", "skip", "Not checked: no figures to compare.");
    } else {
      const entry = b64(s.entry);
      const proof = s.proof.map(b64);
      try {
        if (note.size !== BigInt(data.size)) throw new Error("the checkpoint is not the page's");
        const root = await rootFromInclusion(BigInt(s.index), note.size, await leafHash(entry),
          proof);
        if (!equal(root, note.root)) throw new Error("the recomputed root is not the checkpoint's");
        set("inclusion", "ok", `Reserve statement #${s.index} is in the log: its SHA-256 leaf ` +
          `hash and the ${proof.length} hashes of its inclusion proof recompute the root of the ` +
          `checkpoint of ${note.size} entries (RFC 9162, WebCrypto).`);
      } catch (e) {
        set("inclusion", "fail", `Reserve statement #${s.index} is NOT proven in the checkpoint: ` +
          e.message + ".");
      }
      const x = JSON.parse(new TextDecoder().decode(entry));
      const shown = (id) => document.getElementById(id)?.dataset.tiyn;
      if (x.type === "statement" && String(x.reserve) === shown("reserve") &&
          String(x.supply) === shown("supply")) {
        set("figures", "ok", `The reserve (${kzt(x.reserve)} KZT) and supply ` +
          `(${kzt(x.supply)} KZT) shown above are that statement's own figures.`);
      } else {
        set("figures", "fail", "The reserve and supply shown above are NOT that statement's.");
      }
    }
    try {
      const log = await ed25519Key(data.vkey, 1);
      const line = lineOf(note, log);
      if (!line) throw new Error("it carries no signature by that key");
      const good = await crypto.subtle.verify({ name: "Ed25519" }, log.key, line.signature,
        te.encode(note.text));
      if (!good) throw new Error("the signature does not verify");
      set("signature", "ok", `The checkpoint is signed by the log key below ` +
        `(${log.name}+${log.keyId}): its Ed25519 signature verifies (WebCrypto).`);
    } catch (e) {
      if (e && e.name === "NotSupportedError") {
        set("signature", "skip", "Not checked: this browser's WebCrypto has no Ed25519.");
      } else {
        set("signature", "fail", `The checkpoint's signature by the log key does NOT check: ` +
          `${e.message}.`);
      }
    }
    await witnessCheck(data, note, set);
    box.dataset.check = results.includes("fail")
      ? "failed"
      : results.includes("skip") ? "partial" : "passed";
  }

  async function witnessCheck(data, note, set) {
    if (data.witnesses.length === 0) {
      set("cosignatures", "skip", "Not checked: this gateway names no witness.");
      return;
    }
    try {
      const found = { ok: [], missing: [], bad: [] };
      for (const vkey of data.witnesses) {
        const k = await ed25519Key(vkey, 4);
        found[await cosigned(note, k)].push(k.name);
      }
      const all = data.witnesses.length;
      if (found.bad.length) {
        set("cosignatures", "fail", `The cosignature of ${found.bad.join(", ")} does NOT ` +
          "verify under the witness key this gateway names.");
      } else if (found.missing.length) {
        set("cosignatures", "skip", `Cosigned by ${found.ok.length} of the ${all} witnesses ` +
          `this gateway names; no cosignature yet from ${found.missing.join(", ")}.`);
      } else {
        set("cosignatures", "ok", `The checkpoint is cosigned by the ${all === 1 ? "witness" :
          `${all} witnesses`} this gateway names (${found.ok.join(", ")}): each ` +
          "cosignature/v1 verifies under its key (Ed25519, WebCrypto).");
      }
    } catch (e) {
      if (e && e.name === "NotSupportedError") {
        set("cosignatures", "skip", "Not checked: this browser's WebCrypto has no Ed25519.");
      } else {
        set("cosignatures", "fail", `The witnesses' cosignatures do NOT check: ${e.message}.`);
      }
    }
  }

  function ticking() {
    const el = document.getElementById("checkpoint-age");
    if (!el) return;
    const base = Number(el.dataset.age);
    const start = performance.now();
    const say = (s) => {
      if (s < 60) return `${s} s ago`;
      if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s ago`;
      if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
      return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h ago`;
    };
    setInterval(() => {
      el.textContent = say(base + Math.floor((performance.now() - start) / 1000));
    }, 1000);
  }

  function chartReadout() {
    const plot = document.querySelector(".plot");
    const holder = document.getElementById("chart-data");
    if (!plot || !holder) return;
    const svg = plot.querySelector("svg");
    const points = JSON.parse(holder.textContent);
    if (!svg || points.length === 0) return;
    const ns = "http://www.w3.org/2000/svg";
    const make = (tag, attrs) => {
      const el = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
      el.style.display = "none";
      svg.appendChild(el);
      return el;
    };
    const box = svg.viewBox.baseVal;
    const frame = svg.querySelector(".frame");
    const top = Number(frame.getAttribute("y"));
    const bottom = top + Number(frame.getAttribute("height"));
    const cursor = make("line", { class: "cursor", y1: top, y2: bottom });
    const dotR = make("circle", { class: "dot-reserve", r: 4.5 });
    const dotS = make("circle", { class: "dot-supply", r: 3 });
    const tip = document.createElement("div");
    tip.className = "tip";
    tip.hidden = true;
    plot.appendChild(tip);
    const hide = () => {
      tip.hidden = true;
      for (const el of [cursor, dotR, dotS]) el.style.display = "none";
    };
    svg.addEventListener("mouseleave", hide);
    svg.addEventListener("mousemove", (ev) => {
      const r = svg.getBoundingClientRect();
      const x = ((ev.clientX - r.left) / r.width) * box.width;
      let best = points[0];
      for (const p of points) if (Math.abs(p[0] - x) < Math.abs(best[0] - x)) best = p;
      const [px, index, block, reserve, supply, time, ry, sy] = best;
      for (const el of [cursor, dotR, dotS]) el.style.display = "";
      cursor.setAttribute("x1", px);
      cursor.setAttribute("x2", px);
      dotR.setAttribute("cx", px);
      dotR.setAttribute("cy", ry);
      dotS.setAttribute("cx", px);
      dotS.setAttribute("cy", sy);
      tip.replaceChildren();
      const line = (label, value) => {
        const div = document.createElement("div");
        div.append(label);
        if (value !== undefined) {
          const b = document.createElement("b");
          b.textContent = value;
          div.append(" ", b);
        }
        tip.appendChild(div);
      };
      line(`Statement #${index} \u00b7 block ${block}`);
      line(time.replace("T", " ").replace(/\.\d+Z$/, " UTC"));
      line("Reserve", `${kzt(reserve)} KZT`);
      line("Supply", `${kzt(supply)} KZT`);
      tip.hidden = false;
      const left = (px / box.width) * r.width;
      const width = tip.offsetWidth;
      tip.style.left = `${Math.min(Math.max(0, left + 12), r.width - width)}px`;
    });
  }

  function copyButton() {
    const button = document.querySelector("button.copy");
    const command = document.getElementById("verify-command");
    if (!button || !command || !navigator.clipboard) {
      button?.remove();
      return;
    }
    button.addEventListener("click", async () => {
      await navigator.clipboard.writeText(command.textContent.trim());
      button.textContent = "Copied";
      setTimeout(() => {
        button.textContent = "Copy";
      }, 1500);
    });
  }

  const data = JSON.parse(document.getElementById("proof-data").textContent);
  ticking();
  chartReadout();
  copyButton();
  browserCheck(data).catch((e) => {
    const box = document.getElementById("browser-check");
    if (box) box.dataset.check = "failed";
    console.error(e);
  });
})();
