// Live (/live): each camera's latest part with its defect boxes and verdict, from the
// /api/v1/live event stream (read with fetch so that the token goes in a header), and the
// camera's counts from /api/v1/cameras.
"use strict";

const tiles = new Map();
let liveAbort = null;
let countsTimer = null;

function tileFor(camera) {
  let tile = tiles.get(camera);
  if (!tile) {
    tile = document.getElementById("live-tile").content.firstElementChild.cloneNode(true);
    tile.dataset.camera = camera;
    tile.querySelector(".cam").textContent = camera;
    document.getElementById("live").appendChild(tile);
    tiles.set(camera, tile);
    document.getElementById("live-empty").hidden = true;
  }
  return tile;
}

function showPicture(p) {
  const tile = tileFor(p.camera);
  const img = tile.querySelector("img");
  img.src = "data:image/jpeg;base64," + p.jpeg;
  img.alt = p.camera + " " + p.seq;
  tile.dataset.seq = p.seq;
  const svg = tile.querySelector("svg");
  svg.setAttribute("viewBox", "0 0 " + p.width + " " + p.height);
  svg.replaceChildren(...p.boxes.map(([x, y, w, h]) => {
    const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    r.setAttribute("x", x); r.setAttribute("y", y); r.setAttribute("width", w); r.setAttribute("height", h);
    return r;
  }));
  const verdict = tile.querySelector(".verdict");
  verdict.textContent = t("verdict." + p.verdict);
  verdict.className = "verdict v-" + p.verdict;
  tile.querySelector(".seq").textContent = t("live.seq", { seq: p.seq });
  tile.querySelector(".score").textContent = p.score === null ? "" : t("live.score", { score: p.score.toFixed(3) });
}

// Read the event stream; on a break, say so and reconnect.
async function follow() {
  if (liveAbort) liveAbort.abort();
  const abort = new AbortController();
  liveAbort = abort;
  while (!abort.signal.aborted) {
    try {
      const headers = { Accept: "text/event-stream" };
      if (ui.token) headers.Authorization = "Bearer " + ui.token;
      const response = await fetch("/api/v1/live", { headers, signal: abort.signal });
      if (!response.ok) throw new Error(response.status + " " + response.statusText);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      showStatus("");
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
          if (data) showPicture(JSON.parse(data));
        }
      }
    } catch (e) {
      if (abort.signal.aborted) return;
      showStatus(t("live.stream_lost"), true);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function refreshCounts() {
  try {
    const cams = await api("/api/v1/cameras");
    for (const c of cams.cameras) {
      tileFor(c.id).querySelector(".counts").textContent = t("live.counts", { ok: c.ok, ng: c.ng, failsafe: c.failsafe });
    }
  } catch (e) {
    showStatus(t("common.error", { message: e.message }), true);
  }
}

boot((again) => {
  if (again) for (const tile of tiles.values()) translate(tile);
  follow();
  clearInterval(countsTimer);
  refreshCounts();
  countsTimer = setInterval(refreshCounts, 1000);
});
