// svs web: draws the state svs sends and sends back what the person does. Keys, crypto and
// sessions stay in the svs process; this page only shows. Everything a peer wrote goes into the
// page as text (textContent), never as markup.

import { Player } from "./player.js";

const $ = (id) => document.getElementById(id);

// The secret arrives in the address's fragment (never sent in a request); kept for reloads of
// this tab only, then taken out of the address bar.
const secret = (() => {
  const fromUrl = location.hash.slice(1);
  if (fromUrl) {
    sessionStorage.setItem("svs-secret", fromUrl);
    history.replaceState(null, "", location.pathname);
    return fromUrl;
  }
  return sessionStorage.getItem("svs-secret") || "";
})();

// The address pasted into this tab again (only the fragment differs): read its secret afresh.
window.addEventListener("hashchange", () => {
  if (location.hash.length > 1) location.reload();
});

let socket = null;
let closedBecause = "";
let state = null;
let unreadBefore = 0;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function send(message) {
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify(message));
    return true;
  }
  return false;
}

function banner(text) {
  const b = $("banner");
  b.textContent = text;
  b.hidden = !text;
}

function connect() {
  socket = new WebSocket(`ws://${location.host}/ws`);
  socket.binaryType = "arraybuffer";
  socket.addEventListener("open", () => send({ type: "hello", secret }));
  socket.addEventListener("message", (event) => {
    if (event.data instanceof ArrayBuffer) {
      const poster = player.binary(event.data);
      if (poster) showPoster(poster.poster, poster.jpeg);
      return;
    }
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    switch (message.type) {
      case "state":
        banner("");
        render(message);
        break;
      case "restore":
        restore(message.text);
        break;
      case "refused":
      case "ended":
        closedBecause = message.text;
        banner(message.text);
        setLink("ended", message.text);
        break;
      case "problem":
        banner(message.text);
        break;
      case "safety":
        showSafety(message);
        break;
      case "videos":
        showLibrary(message);
        break;
      case "play_started":
        player.started(message);
        break;
      case "play_notice":
        player.notice(message);
        break;
      case "play_ended":
        player.ended(message);
        break;
    }
  });
  socket.addEventListener("close", () => {
    // The reason svs web gave, if it gave one, stays on the page.
    if (closedBecause) return;
    setLink("ended", "svs web is not answering");
    banner("svs web is not answering; start it again and reload this page");
  });
}

// A line that did not go comes back; whatever the person typed since is kept after it.
function restore(line) {
  const box = $("message");
  box.value = box.value ? `${line} ${box.value}` : line;
  box.focus();
}

function setLink(link, detail) {
  const node = $("link");
  node.className = `link ${link}`;
  node.textContent = detail ? `${link}: ${detail}` : link;
}

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function render(s) {
  state = s;
  $("me").textContent = `${s.me} · key ${s.fingerprint.slice(0, 16)}…`;
  setLink(s.link, s.link_detail);
  $("playing").textContent = s.playbacks
    .map((p) => `▶ ${p.video} ${p.rendition} ${clock(p.position_seconds)} / ${clock(p.duration_seconds)}`)
    .join("   ");
  renderViews(s);
  renderPeople(s);
  renderRoom(s);
  renderEntries(s);
  renderPrompt(s.prompt);
  notify(s);
  document.title = totalUnread(s) ? `(${totalUnread(s)}) svs` : "svs";
}

function totalUnread(s) {
  return s.views.reduce((n, v) => n + v.unread, 0);
}

// The conversation, or the library and player.
let watching = false;

function showWatch(on) {
  watching = on;
  $("watch").hidden = !on;
  $("conversation").hidden = on;
  $("show-library").classList.toggle("active", on);
  if (state) renderViews(state);
}

function openLibrary() {
  showWatch(true);
  $("player").hidden = true;
  $("library").hidden = false;
  player.stop();
  send({ type: "videos" });
}

const posters = new Map();

function showLibrary(message) {
  const library = $("library");
  if (message.error) {
    library.replaceChildren(el("p", "problem", `cannot list the videos: ${message.error}`));
    return;
  }
  if (!message.videos.length) {
    library.replaceChildren(el("p", "event", "no videos yet (the service makes demos with `stream-service make-demo`)"));
    return;
  }
  library.replaceChildren(
    ...message.videos.map((video) => {
      const card = el("div", "video");
      card.dataset.video = video.name;
      const picture = posters.has(video.name) ? el("img") : el("div", "no-poster");
      if (posters.has(video.name)) picture.src = posters.get(video.name);
      picture.alt = "";
      const caption = el("div", "caption");
      caption.append(
        el("span", "name", video.name),
        el("span", "meta", `${clock(video.duration_seconds)} · ${video.renditions.join(" ")}${video.has_audio ? " · sound" : ""}`),
      );
      card.append(picture, caption);
      card.addEventListener("click", () => watch(video.name));
      return card;
    }),
  );
}

function showPoster(video, jpeg) {
  const old = posters.get(video);
  if (old) URL.revokeObjectURL(old);
  const url = URL.createObjectURL(new Blob([jpeg], { type: "image/jpeg" }));
  posters.set(video, url);
  const card = document.querySelector(`.video[data-video="${CSS.escape(video)}"]`);
  if (card) {
    const img = el("img");
    img.src = url;
    img.alt = "";
    card.firstChild.replaceWith(img);
  }
}

function watch(video, start = 0) {
  showWatch(true);
  $("library").hidden = true;
  $("player").hidden = false;
  player.play(video, start);
}

function renderViews(s) {
  const list = $("views");
  list.replaceChildren(
    ...s.views.map((view, n) => {
      const item = el("li", n === s.active && !watching ? "active" : "");
      item.dataset.view = String(n);
      item.append(el("span", "label", view.label));
      if (view.unread) item.append(el("span", "unread", String(view.unread)));
      item.addEventListener("click", () => {
        showWatch(false);
        send({ type: "show", view: n });
      });
      return item;
    }),
  );
}

function renderPeople(s) {
  const list = $("people");
  list.replaceChildren(
    ...s.people.map((p) => {
      const item = el("li", p.online ? "online" : "offline");
      item.dataset.name = p.name;
      item.title = p.fingerprint ? `key ${p.fingerprint}` : "";
      const verify = el("button", "verify-link", "verify");
      verify.type = "button";
      verify.title = `compare safety numbers with ${p.name}`;
      verify.addEventListener("click", (e) => {
        e.stopPropagation();
        send({ type: "verify", name: p.name });
      });
      item.append(el("span", "dot"), el("span", "name", p.name), el("span", `key ${p.key}`, p.key), verify);
      item.addEventListener("click", () => {
        showWatch(false);
        send({ type: "line", text: `/open ${p.name}` });
      });
      return item;
    }),
  );
}

function renderRoom(s) {
  const room = s.views[s.active] && s.views[s.active].room;
  const node = $("room");
  node.hidden = !room;
  if (room) {
    const people = room.people.map((p) => (p.devices > 1 ? `${p.name} (${p.devices} devices)` : p.name));
    node.textContent = `members: ${people.join(", ")} · epoch ${room.epoch} · room code ${room.code}`;
  }
}

function entryNode(e) {
  const item = el("li", e.kind);
  if (e.first_unread) item.classList.add("first-unread");
  item.append(el("span", "time", new Date(e.time_ms).toLocaleTimeString()));
  switch (e.kind) {
    case "incoming":
      item.append(el("span", "from", e.from), document.createTextNode(`: ${e.text}`));
      if (e.warning) item.append(el("span", "alarm", `  ${e.warning}`));
      break;
    case "outgoing": {
      item.append(el("span", "from", `you → ${e.to.join(", ")}`), document.createTextNode(`: ${e.text}`));
      for (const r of e.recipients) {
        const label = e.recipients.length > 1 ? `${r.name} ${r.state}` : r.state;
        const state = el("span", `state ${r.state}`, r.detail ? `${label} (${r.detail})` : label);
        state.dataset.recipient = r.name;
        item.append(state);
      }
      break;
    }
    case "room":
      item.append(el("span", "from", `${e.from} in #${e.room}`), document.createTextNode(`: ${e.text}`));
      break;
    case "info":
      item.textContent = e.lines.join("\n");
      break;
    default:
      item.append(document.createTextNode(e.text));
  }
  return item;
}

function renderEntries(s) {
  const list = $("entries");
  const following = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren(...s.entries.map(entryNode));
  if (following) list.scrollTop = list.scrollHeight;
}

// The safety number with a person: its digits and its QR code, drawn module by module.
function showSafety(message) {
  $("verify").hidden = false;
  $("verify-title").textContent = `Safety number with ${message.name}`;
  $("verify-error").textContent = message.error || "";
  $("verify-number").textContent = message.display || "";
  $("verify-trust").hidden = !!message.error;
  $("verify-trust").dataset.name = message.name;
  const canvas = $("verify-qr");
  canvas.hidden = !!message.error;
  if (message.error) return;
  const width = message.qr_width;
  const quiet = 4;
  const scale = Math.floor(240 / (width + 2 * quiet));
  canvas.width = canvas.height = scale * (width + 2 * quiet);
  const context = canvas.getContext("2d");
  context.fillStyle = "white";
  context.fillRect(0, 0, canvas.width, canvas.height);
  context.fillStyle = "black";
  for (let y = 0; y < width; y++) {
    for (let x = 0; x < width; x++) {
      if (message.qr_modules[y * width + x] === "1") context.fillRect((x + quiet) * scale, (y + quiet) * scale, scale, scale);
    }
  }
}

// Hex fingerprint as rows of four groups of four digits.
function rows(hex) {
  const groups = (hex || "").match(/.{1,4}/g) || [];
  const out = [];
  for (let i = 0; i < groups.length; i += 4) out.push(groups.slice(i, i + 4).join(" "));
  return out;
}

function renderPrompt(prompt) {
  const modal = $("prompt");
  const box = $("message");
  const sendButton = $("send");
  modal.hidden = !prompt;
  box.disabled = !!prompt;
  sendButton.disabled = !!prompt;
  if (!prompt) return;
  const changed = prompt.kind === "key_changed";
  $("prompt-title").textContent = changed
    ? `⚠ ${prompt.name}'s key has CHANGED`
    : `Trust ${prompt.name}'s key?`;
  $("prompt-text").textContent = changed
    ? `Nothing was sent. Check the new fingerprint with ${prompt.name} (in person or on a call) before you trust it: a changed key can mean someone is in the middle.`
    : `Compare the fingerprints with ${prompt.name} before you trust the key.`;
  const pinned = rows(prompt.pinned);
  const now = rows(prompt.now);
  $("prompt-keys").tBodies[0].replaceChildren(
    ...now.map((row, n) => {
      const old = pinned[n] || "(none)";
      const tr = el("tr", old === row ? "" : "differs");
      tr.append(el("td", "", old === row ? "" : "≠"), el("td", "", old), el("td", "", row));
      return tr;
    }),
  );
  $("prompt-yes").textContent = changed ? "Trust the new key and send" : "Trust";
  $("prompt-no").textContent = changed ? "Don't send" : "Cancel";
  $("prompt-yes").dataset.key = changed ? "t" : "y";
}

// A desktop notification for new messages while this tab is hidden.
function notify(s) {
  const unread = totalUnread(s);
  if (document.hidden && unread > unreadBefore && "Notification" in window && Notification.permission === "granted") {
    new Notification("svs", { body: `${unread} unread message${unread === 1 ? "" : "s"}` });
  }
  unreadBefore = unread;
}

function submit(event) {
  event.preventDefault();
  if ("Notification" in window && Notification.permission === "default") Notification.requestPermission();
  const box = $("message");
  const text = box.value;
  if (!text.trim()) return;
  // Playing happens in this page: `/play VIDEO [START]` opens the player here, `/stop` closes it.
  const play = text.trim().match(/^\/play\s+(\S+)(?:\s+(\d+(?:\.\d+)?))?$/);
  if (play) {
    box.value = "";
    watch(play[1], Number(play[2] || 0));
    return;
  }
  const verify = text.trim().match(/^\/verify\s+(\S+)$/);
  if (verify) {
    box.value = "";
    send({ type: "verify", name: verify[1] });
    return;
  }
  if (text.trim() === "/stop") {
    box.value = "";
    openLibrary();
    return;
  }
  if (send({ type: "line", text })) box.value = "";
  else banner("not sent: svs web is not answering (the text is still in the box)");
}

let player = null;

document.addEventListener("DOMContentLoaded", () => {
  player = new Player(
    {
      screen: $("screen"), stats: $("stats"), seek: $("seek"), clock: $("clock"),
      resolution: $("resolution"), playPause: $("play-pause"), note: $("player-note"), mute: $("mute"),
    },
    send,
  );
  window.svsPlayer = player;
  $("show-library").addEventListener("click", openLibrary);
  $("verify-close").addEventListener("click", () => { $("verify").hidden = true; });
  $("verify-trust").addEventListener("click", (e) => {
    $("verify").hidden = true;
    send({ type: "line", text: `/trust ${e.target.dataset.name}` });
  });
  $("play-pause").addEventListener("click", () => player.togglePause());
  $("seek").addEventListener("input", () => { player.seekDragging = true; });
  $("seek").addEventListener("change", (e) => {
    player.seekDragging = false;
    player.seekTo(Number(e.target.value));
  });
  $("resolution").addEventListener("change", (e) => player.switchTo(e.target.value));
  $("mute").addEventListener("click", () => player.toggleMute());
  $("close-player").addEventListener("click", openLibrary);
  $("compose").addEventListener("submit", submit);
  $("prompt-yes").addEventListener("click", (e) => send({ type: "answer", key: e.target.dataset.key }));
  $("prompt-no").addEventListener("click", () => send({ type: "answer", key: "n" }));
  document.addEventListener("keydown", (e) => {
    const typing = e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement;
    if (watching && !typing && !$("player").hidden && !e.altKey && !e.ctrlKey && !e.metaKey) {
      if (e.key === "q" || e.key === "Escape") {
        openLibrary();
        e.preventDefault();
        return;
      }
      if (player.key(e)) {
        e.preventDefault();
        return;
      }
    }
    if (e.altKey && e.key >= "1" && e.key <= "9" && state) {
      send({ type: "show", view: Number(e.key) - 1 });
      e.preventDefault();
    } else if (e.key === "Escape" && state && state.prompt) {
      send({ type: "answer", key: "n" });
    }
  });
  if (!secret) {
    banner("open the address svs web printed (it carries a secret)");
    return;
  }
  connect();
});
