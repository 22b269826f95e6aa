// The console behind a login (tests/console_browser.rs): the API wants a credential, so
// the page shows its login; it logs in as an MQTT user of the viewer role (HTTP Basic)
// and lists the pushed stream. params: { user, password, device, timeout_ms }
async (params) => {
  const deadline = performance.now() + params.timeout_ms - 3000;
  const result = { stage: "start" };
  const until = async (what, check) => {
    result.stage = what;
    while (!check()) {
      if (performance.now() > deadline) throw new Error(`timed out: ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  try {
    await until("login shown", () => !document.getElementById("login").hidden);
    result.rows_before = document.querySelectorAll("#streams tbody tr").length;
    document.getElementById("login-user").value = params.user;
    document.getElementById("login-password").value = params.password;
    document.getElementById("login-form").requestSubmit();
    await until("stream listed after the login", () =>
      [...document.querySelectorAll("#streams tbody tr")].some((tr) =>
        tr.dataset.key.endsWith(`/${params.device}_1`),
      ),
    );
    result.login_hidden = document.getElementById("login").hidden;
    result.stage = "done";
    result.ok = true;
  } catch (e) {
    result.error = String(e);
  }
  return result;
}
