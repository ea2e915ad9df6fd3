// Service inbox: live updates (server-sent events), keyboard shortcuts, canned replies.
(function () {
  "use strict";

  // The server says "changed" when the queue or the open conversation changes; the parts of the
  // page that listen (hx-trigger="inbox:changed from:body") reload themselves.
  // The stream follows the open conversation: opening another one (an htmx swap of the middle
  // pane) reconnects it, so that conversation's messages and delivery states stay live too.
  var source = null;
  function listen(url) {
    if (!window.EventSource || !url) { return; }
    if (source) { source.close(); }
    source = new EventSource(url);
    source.addEventListener("changed", function () {
      document.body.dispatchEvent(new Event("inbox:changed"));
    });
  }
  var root = document.querySelector("[data-inbox-stream]");
  if (root) { listen(root.getAttribute("data-inbox-stream")); }
  document.body.addEventListener("htmx:afterSettle", function (event) {
    var open = document.querySelector("#conversation-pane [data-conversation-stream]");
    if (!open) { return; }
    if (event.target && event.target.id === "conversation-pane") {
      listen(open.getAttribute("data-conversation-stream"));
    }
    var id = open.getAttribute("data-conversation-stream").split("=").pop();
    document.querySelectorAll(".siyu-queue-row").forEach(function (row) {  // the open one stays marked
      var link = row.querySelector("[data-conversation-id]");
      row.classList.toggle("active", !!link && link.getAttribute("data-conversation-id") === id);
    });
  });

  function typing(target) {
    return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  }

  function rows() { return Array.prototype.slice.call(document.querySelectorAll("[data-conversation-id]")); }

  document.addEventListener("keydown", function (event) {
    var composer = event.target.closest && event.target.closest("[data-composer]");
    if (composer && event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      composer.requestSubmit();
      return;
    }
    if (typing(event.target) || event.altKey || event.ctrlKey || event.metaKey) { return; }
    if (event.key === "j" || event.key === "k") {
      var list = rows();
      if (!list.length) { return; }
      var index = list.indexOf(document.activeElement);
      index = event.key === "j" ? Math.min(list.length - 1, index + 1) : Math.max(0, index - 1);
      list[index].focus();
      event.preventDefault();
    } else if (event.key === "r") {
      var box = document.querySelector("[data-shortcut-target=r]");
      if (box) { box.focus(); event.preventDefault(); }
    } else if (event.key === "e") {
      var resolve = document.querySelector("[data-shortcut=e]");
      if (resolve) { resolve.click(); event.preventDefault(); }
    }
  });

  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("[data-canned]");
    if (!button) { return; }
    var box = button.closest("form").querySelector("textarea[name=text]");
    var text = button.getAttribute("data-canned");
    box.value = box.value ? box.value + "\n" + text : text;
    var ids = button.getAttribute("data-script-id") && button.closest("form").querySelector("[data-script-ids]");
    if (ids) {  // a script from the library: counted when the reply is sent
      var picked = ids.value ? ids.value.split(",") : [];
      if (picked.indexOf(button.getAttribute("data-script-id")) < 0) { picked.push(button.getAttribute("data-script-id")); }
      ids.value = picked.join(",");
    }
    box.focus();
  });

  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches("select[data-autosubmit]")) { event.target.form.requestSubmit(); }
  });
})();
