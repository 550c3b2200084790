// Keygate console: the little script the pages need. Plain JavaScript, no build step.
// Every change goes through the admin API (/admin/v1) with the session's CSRF token, so
// the console can do only what the person's role allows there.
"use strict";

(function () {
  const API = "/admin/v1";

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // Call the admin API; resolve with the JSON body, or throw an Error whose message is
  // the API's own words (error.message), never raw JSON.
  async function api(method, path, body) {
    const headers = { "X-CSRF-Token": csrfToken(), Accept: "application/json" };
    const init = { method, headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(API + path, init);
    } catch (err) {
      throw new Error("Keygate could not be reached. Check your connection and try again.");
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (err) {
      data = null;
    }
    if (!response.ok) {
      if (response.status === 401) {
        window.location.assign("/console/sign-in?next=" + encodeURIComponent(location.pathname));
      }
      const error = new Error(
        data && data.error && data.error.message
          ? data.error.message
          : "Something went wrong (HTTP " + response.status + "). Please try again."
      );
      error.field = data && data.error ? data.error.field : undefined;
      throw error;
    }
    return data;
  }

  function path(...parts) {
    return parts.map((p) => "/" + encodeURIComponent(p)).join("");
  }

  // --- small UI helpers ------------------------------------------------------------

  let toastTimer = null;
  function toast(message, isError) {
    const el = document.getElementById("toast");
    if (!el) return;
    el.textContent = message;
    el.classList.toggle("toast-error", Boolean(isError));
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
  }

  function showError(form, message) {
    const box = form.querySelector("[data-form-error]");
    if (!box) { toast(message, true); return; }
    box.textContent = message;
    box.hidden = false;
  }

  function clearError(form) {
    const box = form.querySelector("[data-form-error]");
    if (box) { box.hidden = true; box.textContent = ""; }
    form.querySelectorAll('[aria-invalid="true"]').forEach((el) => el.removeAttribute("aria-invalid"));
  }

  function markField(form, field) {
    if (!field) return;
    const el = form.querySelector('[name="' + field + '"]') ||
      (field === "scopes" ? form.querySelector('[name="scopes"], [name="scopes_text"]') : null) ||
      (field.startsWith("expires") ? form.querySelector('[name="expiry"]') : null) ||
      (field.startsWith("rate_limit") ? form.querySelector('[name="rate_requests"]') : null);
    if (el) { el.setAttribute("aria-invalid", "true"); el.focus(); }
  }

  async function busy(button, work) {
    const label = button ? button.textContent : "";
    if (button) { button.disabled = true; button.textContent = "Working…"; }
    try {
      return await work();
    } finally {
      if (button) { button.disabled = false; button.textContent = label; }
    }
  }

  // --- copy buttons ----------------------------------------------------------------

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    const field = document.getElementById(button.getAttribute("data-copy"));
    if (!field) return;
    try {
      await navigator.clipboard.writeText(field.value);
      button.textContent = "Copied";
      toast("Copied to the clipboard");
    } catch (err) {
      field.select();
      toast("Press Ctrl+C (⌘C) to copy: the browser did not allow it", true);
    }
    setTimeout(() => { button.textContent = "Copy"; }, 2500);
  });

  // --- dialogs (native <dialog>: focus is moved in and kept there, Escape closes) ---

  document.addEventListener("click", (event) => {
    const opener = event.target.closest("[data-dialog-open]");
    if (opener) {
      const dialog = document.getElementById(opener.getAttribute("data-dialog-open"));
      if (dialog && !dialog.open) dialog.showModal();
      return;
    }
    const closer = event.target.closest("[data-dialog-close]");
    if (closer) {
      const dialog = closer.closest("dialog");
      if (dialog) dialog.close();
    }
  });

  // --- create a key ----------------------------------------------------------------

  const expiry = document.getElementById("key-expiry");
  if (expiry) {
    const dateField = document.getElementById("expiry-date-field");
    const sync = () => { dateField.hidden = expiry.value !== "date"; };
    expiry.addEventListener("change", sync);
    sync();
  }

  const createForm = document.getElementById("create-key-form");
  if (createForm) {
    createForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearError(createForm);
      let body;
      try {
        body = keyBody(createForm);
      } catch (err) {
        showError(createForm, err.message);
        markField(createForm, err.field);
        return;
      }
      const org = createForm.dataset.org;
      const button = createForm.querySelector('button[type="submit"]');
      try {
        const created = await busy(button, () => api("POST", path("orgs", org, "keys"), body));
        showCreated(org, created);
      } catch (err) {
        showError(createForm, err.message);
        markField(createForm, err.field);
      }
    });
  }

  function fail(message, field) {
    const err = new Error(message);
    err.field = field;
    return err;
  }

  function keyBody(form) {
    const data = new FormData(form);
    const name = String(data.get("name") || "").trim();
    if (!name) throw fail("Give the key a name.", "name");
    let scopes = data.getAll("scopes").map(String);
    if (form.querySelector('[name="scopes_text"]')) {
      scopes = String(data.get("scopes_text") || "").split(/[\s,]+/).filter(Boolean);
    }
    if (scopes.length === 0) throw fail("Choose at least one scope.", "scopes");
    const body = { name, scopes, env: String(data.get("env") || "live") };
    const preset = String(data.get("expiry") || "never");
    if (preset === "date") {
      const day = String(data.get("expiry_date") || "");
      if (!day) throw fail("Choose the date the key stops working.", "expiry_date");
      body.expires_at = day + "T23:59:59Z";
    } else if (preset !== "never") {
      body.expires_in = preset;
    }
    const requests = String(data.get("rate_requests") || "").trim();
    if (requests) {
      const count = Number(requests);
      if (!Number.isInteger(count) || count < 1) {
        throw fail("The rate limit must be a whole number of requests, at least 1.", "rate_requests");
      }
      body.rate_limit = { requests: count, per: String(data.get("rate_per") || "1m") };
    }
    return body;
  }

  function showCreated(org, created) {
    document.getElementById("create-section").hidden = true;
    const panel = document.getElementById("created-section");
    document.getElementById("created-secret").value = created.secret;
    panel.querySelector("[data-created-prefix]").textContent = created.key.display_prefix + "…";
    panel.querySelector("[data-created-name]").textContent = created.key.name;
    panel.querySelector("[data-created-link]").href = "/console" + path("orgs", org, "keys", created.key.id);
    panel.hidden = false;
    document.getElementById("created-title").focus();
  }

  // --- revoke and roll -------------------------------------------------------------

  const revokeForm = document.getElementById("revoke-form");
  if (revokeForm) {
    revokeForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearError(revokeForm);
      const reason = String(new FormData(revokeForm).get("reason") || "").trim();
      const { org, key } = revokeForm.dataset;
      const button = revokeForm.querySelector('button[type="submit"]');
      try {
        await busy(button, () =>
          api("POST", path("orgs", org, "keys", key) + "/revoke", reason ? { reason } : {}));
        window.location.reload();
      } catch (err) {
        showError(revokeForm, err.message);
      }
    });
  }

  const rollForm = document.getElementById("roll-form");
  if (rollForm) {
    rollForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearError(rollForm);
      const grace = String(new FormData(rollForm).get("grace") || "24h");
      const { org, key } = rollForm.dataset;
      const button = rollForm.querySelector('button[type="submit"]');
      try {
        const rolled = await busy(button, () =>
          api("POST", path("orgs", org, "keys", key) + "/roll", { grace }));
        rollForm.hidden = true;
        const done = document.getElementById("rolled-section");
        document.getElementById("rolled-secret").value = rolled.secret;
        done.querySelector("[data-rolled-link]").href = "/console" + path("orgs", org, "keys", rolled.key.id);
        done.hidden = false;
        document.getElementById("rolled-title").focus();
      } catch (err) {
        showError(rollForm, err.message);
      }
    });
    // Once the new secret was shown, closing the dialog must not leave a stale page.
    rollForm.closest("dialog").addEventListener("close", () => {
      if (rollForm.hidden) window.location.reload();
    });
  }

  // --- members ---------------------------------------------------------------------

  const inviteForm = document.getElementById("invite-form");
  if (inviteForm) {
    inviteForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearError(inviteForm);
      const data = new FormData(inviteForm);
      const email = String(data.get("email") || "").trim();
      if (!email) {
        showError(inviteForm, "Enter the email address of the person to invite.");
        markField(inviteForm, "email");
        return;
      }
      const body = { email, role: String(data.get("role")) };
      const name = String(data.get("name") || "").trim();
      if (name) body.name = name;
      const org = inviteForm.dataset.org;
      const button = inviteForm.querySelector('button[type="submit"]');
      try {
        const invited = await busy(button, () => api("POST", path("orgs", org, "members"), body));
        const result = document.getElementById("invite-result");
        result.querySelector("[data-invite-email]").textContent = invited.member.email;
        document.getElementById("invite-link").value = invited.invite_url;
        result.hidden = false;
        inviteForm.reset();
        toast("Invite created for " + invited.member.email);
        document.getElementById("invite-link").focus();
      } catch (err) {
        showError(inviteForm, err.message);
        markField(inviteForm, err.field);
      }
    });
  }

  document.querySelectorAll("[data-role-select]").forEach((select) => {
    select.addEventListener("change", async () => {
      const { org, email, current } = select.dataset;
      select.disabled = true;
      try {
        const member = await api("PATCH", path("orgs", org, "members", email), { role: select.value });
        select.dataset.current = member.role;
        toast(email + " is now " + member.role);
      } catch (err) {
        select.value = current;
        toast(err.message, true);
      } finally {
        select.disabled = false;
      }
    });
  });

  const removeDialog = document.getElementById("remove-dialog");
  if (removeDialog) {
    const removeForm = document.getElementById("remove-form");
    let removing = null;
    document.querySelectorAll("[data-remove-member]").forEach((button) => {
      button.addEventListener("click", () => {
        removing = button.dataset.email;
        clearError(removeForm);
        removeDialog.querySelector("[data-remove-email]").textContent = removing;
        removeDialog.showModal();
      });
    });
    removeForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const org = removeForm.dataset.org;
      const button = removeForm.querySelector('button[type="submit"]');
      try {
        await busy(button, () => api("DELETE", path("orgs", org, "members", removing)));
        const row = document.querySelector('#members-table tr[data-email="' + CSS.escape(removing) + '"]');
        if (row) row.remove();
        removeDialog.close();
        toast(removing + " was removed");
      } catch (err) {
        showError(removeForm, err.message);
      }
    });
  }
  // --- revoke a person's user tokens (SPEC §11) ---------------------------------------

  const revokeTokensForm = document.getElementById("revoke-tokens-form");
  if (revokeTokensForm) {
    const done = revokeTokensForm.querySelector("[data-form-done]");
    revokeTokensForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearError(revokeTokensForm);
      done.hidden = true;
      const data = new FormData(revokeTokensForm);
      const subject = String(data.get("subject") || "").trim();
      if (!subject) {
        showError(revokeTokensForm, "Enter the subject (the tokens' sub claim) whose tokens to revoke.");
        markField(revokeTokensForm, "subject");
        return;
      }
      const body = { subject };
      const issuer = String(data.get("issuer") || "");
      if (issuer) body.issuer = issuer;
      const org = revokeTokensForm.dataset.org;
      const button = revokeTokensForm.querySelector('button[type="submit"]');
      try {
        const revoked = await busy(button, () =>
          api("POST", path("orgs", org, "user-tokens") + "/revoke", body));
        const from = revoked.issuer ? " from " + revoked.issuer : "";
        const until = new Date(revoked.revoked_before).toLocaleString();
        done.textContent = "The user tokens of " + revoked.subject + from + " for " + revoked.org +
          " issued until " + until + " are now refused.";
        done.hidden = false;
        revokeTokensForm.reset();
        toast("Tokens of " + revoked.subject + " revoked");
      } catch (err) {
        showError(revokeTokensForm, err.message);
        markField(revokeTokensForm, err.field);
      }
    });
  }
})();
