// The review page's behaviour: load the results, draw the grid, keys, decisions.
(function () {
  "use strict";
  var items = [], shown = [], cur = -1, undone = [], mode = "side", flipped = false;
  var $ = function (id) { return document.getElementById(id); };
  var grid = $("grid"), stage = $("stage"), noteform = $("noteform"), note = $("note");
  var filters = { state: $("f-state"), decision: $("f-decision"), model: $("f-model"), prompt: $("f-prompt") };

  function api(path, body) {
    var init = body ? { method: "POST", headers: { "Content-Type": "application/json" },
                        body: JSON.stringify(body) } : {};
    return fetch(path, init).then(function (r) {
      if (r.ok) return r.json();
      return r.text().then(function (t) { throw new Error(t || ("HTTP " + r.status)); });
    });
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }
  function money(v) { return v === null || v === undefined ? "" : "$" + v.toFixed(3); }
  function flash(text) { $("flash").textContent = text; }

  function options(select, values) {
    values.forEach(function (v) { select.appendChild(new Option(v, v)); });
  }
  function load() {
    return api("api/results").then(function (data) {
      items = data.items;
      $("title").textContent = data.manifest + (data.simulated ? " · simulated costs" : "");
      document.title = data.manifest + " · imgedit review";
      var uniq = function (key) {
        return items.map(function (i) { return i[key]; }).filter(function (v, n, all) {
          return v && all.indexOf(v) === n; }).sort();
      };
      options(filters.state, uniq("state"));
      options(filters.model, uniq("model"));
      var want = decodeURIComponent(location.hash.slice(1));
      render(want || null);
    }).catch(function (e) { flash("could not load the results: " + e.message); });
  }

  function passes(i) {
    var q = filters.prompt.value.trim().toLowerCase();
    return (!filters.state.value || i.state === filters.state.value) &&
      (!filters.decision.value || (i.decision || "none") === filters.decision.value) &&
      (!filters.model.value || i.model === filters.model.value) &&
      (!q || (i.prompt || "").toLowerCase().indexOf(q) >= 0 || i.id.toLowerCase().indexOf(q) >= 0);
  }

  function counts() {
    var a = 0, r = 0, done = 0;
    items.forEach(function (i) {
      if (i.decision === "approved") a++; else if (i.decision === "rejected") r++;
      if (i.state === "succeeded") done++;
    });
    var c = $("counts");
    c.innerHTML = "";
    c.append(el("b", "", items.length), " tasks · ", el("b", "ok", a + " approved"), " · ",
             el("b", "bad", r + " rejected"), " · " + Math.max(done - a - r, 0) + " to review");
  }

  function tile(i, compared) {
    var t = el("button", "tile " + i.state);
    t.type = "button"; t.dataset.id = i.id; t.dataset.decision = i.decision || "";
    t.title = i.id + (i.model ? " · " + i.model : "") + (i.source ? " · " + i.source : "");
    var out = i.outputs[0];
    if (out && out.exists) {
      var img = el("img"); img.loading = "lazy"; img.alt = i.id; img.src = "thumb/" + out.key;
      t.appendChild(img);
    } else {
      t.appendChild(el("span", "none", i.state === "failed" ? "✕" : i.state === "unknown" ? "?" : "…"));
    }
    t.appendChild(el("span", "tm", compared ? [i.model, money(i.cost)].filter(Boolean).join("\n")
                                           : i.id.split("/").pop()));
    t.appendChild(el("span", "mark", i.decision === "rejected" ? "✕" : "✓"));
    t.addEventListener("click", function () { select(shown.indexOf(i)); });
    return t;
  }

  // Tasks that share a source image (the same photo through several models) sit together
  // under its name, each with its cost; results of a photo of their own flow in one grid.
  function render(wantId) {
    shown = items.filter(passes);
    grid.innerHTML = "";
    var bySource = {};
    shown.forEach(function (i) { (bySource[i.source] = bySource[i.source] || []).push(i); });
    var loose = null;
    shown.forEach(function (i) {
      var members = bySource[i.source];
      if (members.length === 1) {
        if (!loose) { loose = el("div", "tiles"); grid.appendChild(el("section", "group")).appendChild(loose); }
        loose.appendChild(tile(i, false));
        return;
      }
      loose = null;
      if (members[0] !== i) return;
      var cost = members.reduce(function (s, j) { return s + (j.cost || 0); }, 0);
      var sec = el("section", "group compare"), h = el("h2"), tiles = el("div", "tiles");
      h.append(el("span", "src", i.source || "(no input recorded)"),
               members.length + " results" + (cost ? " · " + money(cost) : ""));
      members.forEach(function (j) { tiles.appendChild(tile(j, true)); });
      sec.append(h, tiles);
      grid.appendChild(sec);
    });
    $("shown").textContent = shown.length === items.length ? shown.length + " shown"
      : shown.length + " of " + items.length + " shown";
    counts();
    var at = wantId ? shown.findIndex(function (i) { return i.id === wantId; }) : -1;
    select(at >= 0 ? at : Math.min(Math.max(cur, 0), shown.length - 1));
  }

  function picture(p, label, cls) {
    var pane = el("div", "pane " + (cls || ""));
    pane.appendChild(el("span", "lbl", label));
    if (p && p.exists) {
      var img = el("img"); img.src = "view/" + p.key; img.alt = label + ": " + p.name;
      var a = el("a"); a.href = "file/" + p.key; a.target = "_blank"; a.appendChild(img);
      pane.appendChild(a);
    } else {
      pane.appendChild(el("span", "empty", p ? "file missing" : "no image"));
    }
    return pane;
  }

  function show(i) {
    stage.innerHTML = "";
    $("slider").hidden = true;
    if (!i) { $("v-id").textContent = "Nothing matches these filters"; return; }
    $("v-id").textContent = i.id;
    $("v-state").textContent = i.state; $("v-state").className = "pill " + i.state;
    var facts = [i.model, i.size, i.quality, money(i.cost),
                 i.attempts + (i.attempts === 1 ? " attempt" : " attempts")];
    $("v-meta").textContent = facts.filter(Boolean).join(" · ");
    $("prompt").textContent = i.prompt || "";
    $("reason").hidden = !i.reason; $("reason").textContent = i.reason || "";
    var before = i.inputs[0], after = i.outputs[0];
    stage.className = "stage " + mode;
    if (mode === "side") {
      stage.append(picture(before, i.inputs.length > 1 ? "Before (1 of " + i.inputs.length + ")" : "Before"),
                   picture(after, i.outputs.length > 1 ? "After (1 of " + i.outputs.length + ")" : "After"));
    } else if (mode === "flip") {
      stage.append(picture(flipped ? before : after, flipped ? "Before (space: after)" : "After (space: before)"));
    } else {
      var pane = el("div", "pane"), box = el("div", "overlay");
      pane.appendChild(el("span", "lbl", "Before | After (drag the slider)"));
      if (before && before.exists && after && after.exists) {
        var b = el("img"), a = el("img", "top"), rule = el("span", "rule");
        b.src = "view/" + before.key; a.src = "view/" + after.key; b.alt = "Before"; a.alt = "After";
        box.append(b, a, rule); pane.appendChild(box);
        box.style.setProperty("--cut", $("slider").value + "%");
        $("slider").hidden = false;
      } else {
        pane.appendChild(el("span", "empty", "needs both a before and an after"));
      }
      stage.appendChild(pane);
    }
    var v = $("verdict");
    v.className = i.decision || "";
    v.textContent = i.decision === "approved" ? "✓ Approved" :
      i.decision === "rejected" ? "✕ Rejected" + (i.note ? ": " + i.note : "") : "";
  }

  function select(n) {
    var old = grid.querySelector(".tile.current");
    if (old) old.classList.remove("current");
    cur = n;
    var i = shown[n];
    if (i) {
      var t = grid.querySelector('.tile[data-id="' + CSS.escape(i.id) + '"]');
      if (t) { t.classList.add("current"); t.scrollIntoView({ block: "nearest" }); }
      history.replaceState(null, "", "#" + encodeURIComponent(i.id));
    }
    flipped = false;
    show(i);
  }
  function move(by) {
    if (shown.length) select(Math.min(Math.max(cur + by, 0), shown.length - 1));
  }

  // A decision moves on at once and is saved in the background: quick keys never land
  // twice on one result. The tile shows it once the server has it.
  function applyDecision(i, answer) {
    i.decision = answer.decision; i.note = answer.note;
    var t = grid.querySelector('.tile[data-id="' + CSS.escape(i.id) + '"]');
    if (t) {
      t.dataset.decision = i.decision || "";
      t.querySelector(".mark").textContent = i.decision === "rejected" ? "✕" : "✓";
    }
    counts();
    if (shown[cur] === i) show(i);
  }
  function decide(kind, text) {
    var i = shown[cur];
    if (!i) return;
    if (i.state !== "succeeded") { flash("no result to review: this task " + i.state); return; }
    undone.push(i.id);
    move(1);
    api("api/decide", { id: i.id, decision: kind, note: text || null }).then(function (answer) {
      applyDecision(i, answer);
      flash(i.id + ": " + answer.decision);
    }).catch(function (e) { undone.pop(); flash("not saved: " + e.message); });
  }
  function undo() {
    var id = undone.pop() || (shown[cur] && shown[cur].id);
    var i = items.find(function (x) { return x.id === id; });
    if (!i) return;
    var at = shown.indexOf(i);
    if (at >= 0) select(at);
    api("api/undo", { id: id }).then(function (answer) {
      applyDecision(i, answer);
      flash(id + ": undone");
    }).catch(function (e) { flash("not undone: " + e.message); });
  }
  function askNote() {
    var i = shown[cur];
    if (!i) return;
    if (i.state !== "succeeded") { flash("no result to review: this task " + i.state); return; }
    noteform.hidden = false; note.value = ""; note.focus();
  }
  function setMode(m) {
    mode = m;
    document.querySelectorAll(".modes button").forEach(function (b) {
      b.setAttribute("aria-pressed", String(b.dataset.mode === m));
    });
    show(shown[cur]);
  }

  noteform.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = note.value.trim();
    noteform.hidden = true; note.blur();
    decide("rejected", text);
  });
  note.addEventListener("keydown", function (e) {
    if (e.key === "Escape") { noteform.hidden = true; note.blur(); flash("not rejected"); }
  });
  document.addEventListener("keydown", function (e) {
    var t = e.target.tagName;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (t === "INPUT" || t === "SELECT" || t === "TEXTAREA") {
      if (e.key === "Escape" && e.target !== note) e.target.blur();
      return;
    }
    var keys = {
      ArrowRight: function () { move(1); }, j: function () { move(1); },
      ArrowLeft: function () { move(-1); }, k: function () { move(-1); },
      a: function () { decide("approved"); }, r: askNote, u: undo,
      v: function () { setMode({ side: "slider", slider: "flip", flip: "side" }[mode]); },
      " ": function () { if (mode !== "flip") setMode("flip"); else { flipped = !flipped; show(shown[cur]); } }
    };
    if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
  });
  $("b-approve").addEventListener("click", function () { decide("approved"); });
  $("b-reject").addEventListener("click", askNote);
  $("b-undo").addEventListener("click", undo);
  $("slider").addEventListener("input", function () {
    var box = stage.querySelector(".overlay");
    if (box) box.style.setProperty("--cut", this.value + "%");
  });
  document.querySelectorAll(".modes button").forEach(function (b) {
    b.addEventListener("click", function () { setMode(b.dataset.mode); b.blur(); });
  });
  // After choosing a filter the keys work again at once: a select gives the focus back,
  // the prompt field on Enter.
  Object.keys(filters).forEach(function (k) {
    filters[k].addEventListener(k === "prompt" ? "input" : "change", function () {
      render(shown[cur] && shown[cur].id);
      if (k !== "prompt") filters[k].blur();
    });
  });
  filters.prompt.addEventListener("keydown", function (e) { if (e.key === "Enter") this.blur(); });
  load();
})();
