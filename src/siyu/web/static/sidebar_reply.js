// The chat toolbar's reply panel: puts a reply into the member's open WeCom chat with the JS-SDK's
// sendChatMessage after wx.agentConfig (W:96935). Siyu cannot send into a member's own chat itself;
// the member presses send. Without the JS-SDK (outside WeCom) the buttons copy the text instead.
(function () {
  "use strict";
  var status = document.querySelector("[data-jssdk-status]");
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  var configured = null;

  function say(text) { if (status) { status.textContent = text; } }

  function agentConfig() {
    if (configured) { return configured; }
    configured = fetch("/sidebar/agent-config", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
      body: JSON.stringify({url: location.href.split("#")[0]})
    }).then(function (answer) {
      return answer.json().then(function (body) {
        if (!answer.ok) { throw new Error(body.message || answer.status); }
        return new Promise(function (resolve, reject) {
          window.wx.agentConfig({
            corpid: body.corpid, agentid: body.agentid, timestamp: body.timestamp, nonceStr: body.nonceStr,
            signature: body.signature, jsApiList: ["sendChatMessage"],
            success: resolve, fail: function (res) { reject(new Error((res && res.errMsg) || "agentConfig")); }
          });
        });
      });
    });
    configured.catch(function () { configured = null; });
    return configured;
  }

  function send(text) {
    if (!window.wx || typeof window.wx.agentConfig !== "function") {
      if (navigator.clipboard) { navigator.clipboard.writeText(text).catch(function () {}); }
      say(status ? status.dataset.copied || "已复制，请粘贴到聊天中" : "");
      return;
    }
    agentConfig().then(function () {
      window.wx.invoke("sendChatMessage", {msgtype: "text", text: {content: text}}, function (res) {
        say(res && res.err_msg === "sendChatMessage:ok" ? "已放入聊天，请在企业微信中点击发送" : "未能放入聊天：" + (res && res.err_msg));
      });
    }).catch(function (error) { say("未能放入聊天：" + error.message); });
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-send-chat]");
    if (button) { send(button.getAttribute("data-send-chat")); }
    if (button && button.getAttribute("data-library-use")) {  // a script from the library: count the use
      fetch("/library/" + encodeURIComponent(button.getAttribute("data-library-use")) + "/use", {
        method: "POST", credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
        body: JSON.stringify({place: "sidebar", customer_id: Number(button.getAttribute("data-customer-id")) || null})
      }).catch(function () {});
    }
  });
  if (window.wx && typeof window.wx.agentConfig === "function") {
    say("企业微信 JS-SDK 已就绪");
  }
}());
