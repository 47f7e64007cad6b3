// flagship desk: keys, decisions and live updates. Served as /assets/desk.js (the CSP allows
// no inline script). Posts arrive as HTML the server escaped; nothing here builds markup from
// post text.
"use strict";
(function () {
  const csrf = document.querySelector('meta[name="csrf"]');
  const list = document.getElementById("posts");
  if (!csrf || !list) return; // the login page
  const token = csrf.content;
  const view = document.body.dataset.view;
  const order = document.body.dataset.order;
  const whose = document.body.dataset.whose || "all";
  const me = document.body.dataset.user || "";
  const role = document.body.dataset.role || "viewer";
  const team = (document.body.dataset.team || "").split(" ").filter(Boolean);
  // The desk's clock, not this machine's: the offset from it, set at load and by each
  // `clock` event (a skewed laptop still sees the right overdue marks).
  let skew = parseInt(document.body.dataset.now || "0", 10) - Date.now();
  function deskNow() {
    return Date.now() + skew;
  }
  function human(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    if (s < 86400) return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }
  // Each first-response clock: how long the post has waited, the time left or how far
  // past the target; overdue posts stand out.
  function tickClocks() {
    const now = deskNow();
    list.querySelectorAll(".clock").forEach(function (c) {
      const arrived = parseInt(c.dataset.arrived, 10);
      const due = parseInt(c.dataset.due, 10);
      const late = now >= due;
      c.textContent = "waiting " + human(now - arrived) + (late ? " · overdue " + human(now - due) : " · due in " + human(due - now));
      const el = c.closest("article.post");
      if (el) el.classList.toggle("overdue", late);
    });
  }
  setInterval(tickClocks, 15000);
  const live = document.getElementById("live");
  // Arrival (server read the post) → shown here, in ms: read by the browser test.
  window.deskLatencies = [];
  let selected = null;
  // This page's decisions, newest last: `u` takes back the last one made here.
  const done = [];

  function posts() {
    return Array.from(list.querySelectorAll("article.post"));
  }
  function select(el) {
    if (selected) selected.classList.remove("selected");
    selected = el;
    if (el) {
      el.classList.add("selected");
      el.focus({ preventScroll: true });
      el.scrollIntoView({ block: "nearest" });
      thread(el);
    }
  }
  function move(step) {
    const all = posts();
    if (!all.length) return;
    const i = selected ? all.indexOf(selected) : -1;
    select(all[Math.max(0, Math.min(all.length - 1, i + step))]);
  }
  function show(el, decision, title) {
    el.className = el.className.replace(/\bstate-\S+/, "state-" + (decision || "open"));
    el.querySelector(".state").textContent = title || "";
  }
  async function decide(el, decision) {
    if (!el || el.classList.contains("saving")) return; // one request per post at a time
    // A question group's card decides every waiting post of the group (undo: all of them).
    const group = el.dataset.group;
    const body = group
      ? new URLSearchParams({ group: group, decision: decision })
      : new URLSearchParams({ id: el.dataset.id, decision: decision });
    el.classList.remove("failed");
    el.classList.add("saving");
    try {
      const r = await fetch(group ? "/api/decide-group" : "/api/decide", {
        method: "POST",
        headers: { "X-CSRF-Token": token },
        body: body,
        credentials: "same-origin",
      });
      const answer = await r.json();
      if (!r.ok) throw new Error(answer.error || r.statusText);
      show(el, answer.decision, answer.title);
      el.classList.remove("saving");
      if (decision !== "undo") {
        done.push(el);
        if (el === selected) move(1);
      }
    } catch (e) {
      el.classList.remove("saving");
      el.classList.add("failed");
      el.querySelector(".state").textContent = "not saved: " + e.message;
    }
  }
  const keys = { r: "needs_reply", n: "no_reply", d: "done" };
  // The suggested answer's text to the clipboard (kept in window.deskCopied as well: read by
  // the browser test, and a fallback where the clipboard is not allowed).
  window.deskCopied = null;
  function copy(button) {
    if (!button) return;
    const text = button.dataset.text;
    window.deskCopied = text;
    const done = function () {
      button.textContent = "copied";
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, done);
    } else {
      done();
    }
  }
  // A reply from the desk: the preview first (each post's text filled in, its platform's
  // length), then an explicit send; a post answered before asks first. Text goes into the
  // page as text only.
  function postBody(el, extra) {
    const f = el.dataset.group ? { group: el.dataset.group } : { id: el.dataset.id };
    return new URLSearchParams(Object.assign(f, extra));
  }
  async function call(path, body) {
    const r = await fetch(path, {
      method: "POST",
      headers: { "X-CSRF-Token": token },
      body: body,
      credentials: "same-origin",
    });
    return [r.status, await r.json()];
  }
  function line(box, cls, text) {
    const p = document.createElement("p");
    p.className = cls;
    p.textContent = text;
    box.append(p);
    return p;
  }
  function link(p, url, text) {
    if (!/^https?:\/\//i.test(url || "")) return;
    const a = document.createElement("a");
    a.href = url;
    a.target = "_blank";
    a.rel = "noopener noreferrer";
    a.textContent = text;
    p.append(" ", a);
  }
  async function preview(el) {
    const button = el && el.querySelector("button.reply");
    const box = el && el.querySelector(".preview");
    if (!button || !box) return;
    box.hidden = false;
    box.textContent = "";
    line(box, "note", "preparing the reply…");
    const [status, posts] = await call(
      "/api/reply/preview",
      postBody(el, { answer: button.dataset.answer })
    );
    box.textContent = "";
    if (status !== 200) {
      line(box, "error", "no preview: " + (posts.error || status));
      return;
    }
    let sendable = 0;
    posts.forEach(function (p) {
      const head = line(box, "to", p.platform + " · " + (p.author || "(unknown)") + " · " + p.used + "/" + p.limit + (p.fits ? "" : " — too long"));
      if (p.replied_before > 0) head.append(" · replied before");
      if (p.text.Err !== undefined) {
        line(box, "error", p.text.Err);
        return;
      }
      line(box, "reply-text", p.text.Ok);
      if (p.can_send && p.fits) sendable++;
      else if (!p.can_send) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = "no account here: copy and open the post";
        b.addEventListener("click", function () {
          window.deskCopied = p.text.Ok;
          if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(p.text.Ok);
          if (/^https?:\/\//i.test(p.url || "")) window.open(p.url, "_blank", "noopener");
        });
        box.append(b);
      }
    });
    if (sendable > 0) {
      const send = document.createElement("button");
      send.type = "button";
      send.className = "send";
      send.textContent = "send " + sendable + (sendable > 1 ? " replies" : " reply");
      send.addEventListener("click", function () {
        sendReply(el, box, button.dataset.answer, false);
      });
      box.append(send);
    }
  }
  async function sendReply(el, box, answer, confirmed) {
    const sendButton = box.querySelector("button.send");
    if (sendButton) sendButton.disabled = true;
    const extra = { answer: answer };
    if (confirmed) extra.confirm = "1";
    const [status, a] = await call("/api/reply/send", postBody(el, extra));
    if (status === 409 && a.ask) {
      if (window.confirm(a.ask)) return sendReply(el, box, answer, true);
      if (sendButton) sendButton.disabled = false;
      return;
    }
    if (status !== 200) {
      line(box, "error", "not sent: " + (a.error || status));
      if (sendButton) sendButton.disabled = false;
      return;
    }
    a.posts.forEach(function (p) {
      const words = { sent: "replied", failed: "failed", unknown: "outcome unknown", not_sent: "not sent" };
      const out = line(box, "result result-" + p.state, (words[p.state] || p.state) + (p.error ? ": " + p.error : ""));
      if (p.state === "sent") link(out, p.url, "the reply");
    });
    if (sendButton) sendButton.remove();
  }
  // A reply's or a quote's parent, fetched once when the post is selected.
  async function thread(el) {
    if (!el || !el.dataset.parent || el.dataset.parentLoaded) return;
    el.dataset.parentLoaded = "1";
    const box = el.querySelector(".thread");
    try {
      const r = await fetch("/api/thread?id=" + encodeURIComponent(el.dataset.id), {
        credentials: "same-origin",
      });
      const p = await r.json();
      if (!r.ok || !p) return;
      box.textContent = "";
      const q = line(box, "parent", (p.quote ? "quoting " : "in reply to ") + (p.author || "(unknown)") + ": " + p.text);
      link(q, p.url, "open");
      box.hidden = false;
    } catch (_) {
      /* the post itself is shown either way */
    }
  }
  // Who holds a post: its holder line and data, live.
  function showHolder(el, held) {
    const span = el.querySelector(".holder");
    if (held) el.dataset.held = held;
    else delete el.dataset.held;
    if (!span) return;
    span.textContent = "";
    if (held) {
      const b = document.createElement("bdi");
      b.textContent = held; // text, never markup
      span.append("held by ", b);
    }
    el.classList.toggle("mine", held === me);
  }
  // `t`: take the selected post or group (yours already: release it); `a` (leads): give it.
  async function assign(el, to) {
    if (!el) return;
    const f = el.dataset.group ? { group: el.dataset.group } : { id: el.dataset.id };
    f.to = to;
    const [status, a] = await call("/api/assign", new URLSearchParams(f));
    if (status !== 200) {
      el.querySelector(".state").textContent = "not assigned: " + (a.error || status);
      return;
    }
    if (el.dataset.group) showHolder(el, to === "" ? null : to === "me" ? me : to);
    a.posts.forEach(function (p) {
      const post = posts().find((o) => o.dataset.id === p.id);
      if (post) showHolder(post, p.held);
    });
  }
  function take(el) {
    if (!el) return;
    assign(el, el.dataset.held === me ? "" : "me");
  }
  function give(el) {
    if (!el || role !== "lead") return;
    const to = window.prompt("Give it to (" + team.join(", ") + "; empty: release):", "");
    if (to === null) return;
    assign(el, to.trim());
  }
  // `x`: a group card's members shown or hidden.
  function expand(el) {
    const d = el && el.querySelector("details.members");
    if (d) d.open = !d.open;
  }
  // `u`: the last decision made on this page, on whichever post it was (selected again).
  function undo() {
    const el = done.pop();
    if (!el) return;
    select(el);
    decide(el, "undo");
  }
  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.target && /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName)) return;
    if (e.key === "j") move(1);
    else if (e.key === "k") move(-1);
    else if (e.key === "u") undo();
    else if (e.key === "x") expand(selected);
    else if (e.key === "c") copy(selected && selected.querySelector("button.copy"));
    else if (e.key === "s") preview(selected);
    else if (e.key === "t") take(selected);
    else if (e.key === "a") give(selected);
    else if (keys[e.key]) decide(selected, keys[e.key]);
    else return;
    e.preventDefault();
  });
  list.addEventListener("click", function (e) {
    const button = e.target.closest("button[name=decision]");
    const el = e.target.closest("article.post");
    if (el) select(el);
    const copying = e.target.closest("button.copy");
    if (copying) {
      e.preventDefault();
      copy(copying);
      return;
    }
    if (e.target.closest("button.reply") && el) {
      e.preventDefault();
      preview(el);
      return;
    }
    if (e.target.closest(".preview")) return; // its own buttons
    if (button && el) {
      e.preventDefault();
      if (button.value === "undo") {
        const i = done.lastIndexOf(el);
        if (i >= 0) done.splice(i, 1);
      }
      decide(el, button.value);
    }
  });

  function place(el) {
    const empty = list.querySelector(".empty");
    if (empty) empty.remove();
    if (order === "probability") {
      const p = parseFloat(el.dataset.p);
      const after = posts().find((o) => parseFloat(o.dataset.p) < p);
      list.insertBefore(el, after || null);
    } else {
      list.insertBefore(el, list.firstChild);
    }
  }
  // Words that came before their post, by post id.
  const earlyWhy = new Map();
  // Words already shown (the scoring pass's, with the post) give way to later ones
  // (occlusion's refinement), as a reload would show them.
  function showWhy(el, words) {
    const shown = el.querySelector(".why bdi");
    if (shown) {
      shown.textContent = words.join(", ");
      return;
    }
    const span = document.createElement("span");
    span.className = "why";
    span.title = "the words that raised the probability most";
    const bdi = document.createElement("bdi");
    bdi.textContent = words.join(", "); // text, never markup
    span.append("why: ", bdi);
    el.querySelector(".state").before(span, " ");
  }
  // Posts (HTML escaped by the server) into the list, each once; `timed`: arrival → screen.
  // `newestFirst`: the HTML lists newest first (a fragment), not in arrival order (events).
  function merge(html, timed, newestFirst) {
    const box = document.createElement("div");
    box.innerHTML = html;
    const now = Date.now();
    const arrived = Array.from(box.querySelectorAll("article.post"));
    if (newestFirst) arrived.reverse();
    arrived.forEach(function (el) {
      const id = el.dataset.id;
      if (el.dataset.group) {
        // A card already here is replaced by the fresher one.
        const card = posts().find((o) => o.dataset.id === id);
        if (card) {
          swap([card], el);
          return;
        }
      }
      if (posts().some((o) => o.dataset.id === id)) return; // never twice
      if (inCard(id)) return; // shown in its group's card
      place(el);
      const early = earlyWhy.get(id);
      if (early) {
        earlyWhy.delete(id);
        showWhy(el, early);
      }
      if (timed) window.deskLatencies.push(now - parseInt(el.dataset.arrived, 10));
    });
    if (!selected) move(1);
  }
  // Whether post `id` is a member of a group card on the page.
  function inCard(id) {
    return posts().some(
      (o) => o.dataset.group && (o.dataset.members || "").split(" ").includes(id)
    );
  }
  // `el` takes the place of `old` (the first of them), which leave the page.
  function swap(old, el) {
    old[0].before(el);
    old.forEach(function (o) {
      if (o === selected) select(el);
      for (let i = 0; i < done.length; i++) if (done[i] === o) done[i] = el;
      o.remove();
    });
  }
  const events = new EventSource("/events");
  events.addEventListener("open", async function () {
    live.textContent = "live";
    live.className = "on";
    // What arrived between the page's render (or a drop) and this stream: merged once.
    if (view !== "queue") return;
    try {
      const r = await fetch("/fragment?view=queue&order=" + order + "&whose=" + whose, { credentials: "same-origin" });
      if (r.ok) merge(await r.text(), false, true);
    } catch (_) {
      /* the stream itself still works */
    }
  });
  events.addEventListener("error", function () {
    live.textContent = "reconnecting…";
    live.className = "off";
    // A closed stream (its session ended, or the desk refused it) never reconnects by itself.
    if (events.readyState === EventSource.CLOSED) {
      setTimeout(function () {
        window.location.reload();
      }, 2000);
    }
  });
  events.addEventListener("post", function (e) {
    // New posts are nobody's: they belong in "all" and "unassigned", never in "mine".
    if (view === "queue" && whose !== "mine") merge(e.data, true, false);
  });
  events.addEventListener("assigned", function (e) {
    JSON.parse(e.data).forEach(function (p) {
      const el = posts().find((o) => o.dataset.id === p.id);
      if (el) showHolder(el, p.held);
    });
  });
  events.addEventListener("clock", function (e) {
    skew = parseInt(e.data, 10) - Date.now();
    tickClocks();
  });
  // A new alert: on top of the banner (escaped by the server); × hides one on this page.
  const banner = document.getElementById("alerts");
  events.addEventListener("alert", function (e) {
    if (!banner) return;
    const box = document.createElement("div");
    box.innerHTML = e.data;
    const line = box.firstElementChild;
    if (line) banner.prepend(line);
  });
  if (banner) {
    banner.addEventListener("click", function (e) {
      const b = e.target.closest("button.dismiss");
      if (b) b.parentElement.remove();
    });
  }
  events.addEventListener("today", function (e) {
    document.getElementById("today").innerHTML = e.data; // escaped by the server
  });
  events.addEventListener("decided", function (e) {
    const d = JSON.parse(e.data);
    const el = posts().find((o) => o.dataset.id === d.id);
    // A post with its own request in flight shows that request's answer.
    if (el && !el.classList.contains("saving")) show(el, d.decision, d.title);
  });
  // A flagged post's words arrive after the post (worked out off the latency path), or
  // refine the ones that came with it; words for a post not on the page yet (a catch-up
  // still loading) wait for it.
  events.addEventListener("why", function (e) {
    const d = JSON.parse(e.data);
    if (d.words.length === 0) return;
    const el = posts().find((o) => o.dataset.id === d.id);
    if (el) {
      showWhy(el, d.words);
    } else if (view === "queue") {
      earlyWhy.set(d.id, d.words);
      if (earlyWhy.size > 500) earlyWhy.delete(earlyWhy.keys().next().value);
    }
  });
  // A question group changed: its card (or its one post, with a suggested answer) replaces
  // the card and the posts of it on the page; a new card goes in as a new post would.
  events.addEventListener("group", function (e) {
    if (view !== "queue") return;
    const d = JSON.parse(e.data);
    const box = document.createElement("div");
    box.innerHTML = d.html; // escaped by the server
    const el = box.querySelector("article.post");
    if (!el) return;
    const old = posts().filter(function (o) {
      if (o.dataset.group) return d.group !== null && o.dataset.group === String(d.group);
      return d.members.includes(o.dataset.id);
    });
    if (old.length) {
      if (old.some((o) => o.classList.contains("saving"))) return; // its own answer comes
      swap(old, el);
    } else if (el.dataset.group) {
      place(el);
      if (!selected) move(1);
    }
  });
  events.addEventListener("reload", function () {
    window.location.reload();
  });
  posts().forEach(function (el) {
    el.classList.toggle("mine", !!me && el.dataset.held === me);
  });
  tickClocks();
  move(1);
})();
