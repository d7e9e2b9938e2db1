// Page-wide messages and the API-key dialog.

const message = () => document.getElementById("message");

/** Show `text` in the message banner; kind "error" (role alert) or "info". */
export function showMessage(text, kind = "error") {
  const el = message();
  el.textContent = text;
  el.classList.toggle("info", kind === "info");
  el.hidden = false;
}

export function clearMessage() {
  const el = message();
  el.textContent = "";
  el.hidden = true;
}

/** Ask for the API key in a modal dialog; resolves to the key, or null when cancelled. */
export function askForKey(reason) {
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("key-input");
  document.getElementById("key-reason").textContent = reason;
  input.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => resolve(dialog.returnValue === "ok" && input.value ? input.value.trim() : null),
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
}
