"""Browser test of the admin UI (`GET /ui`), end to end against a running gateway.

Run by `scripts/ui-test`, which starts the gateway (master key, one priced mock model, store_model_in_db)
and sets:
  LLM_UI_BASE        the gateway's URL, e.g. http://127.0.0.1:4555
  LLM_UI_MASTER_KEY  its master key
  LLM_UI_ARTIFACTS   where screenshots go
  LLM_UI_DOCS        where one screenshot per page is copied (docs/ui); empty: not copied
  CHROMIUM           the browser (default /usr/bin/chromium: Debian's, never a downloaded one)

Headless Chromium through Playwright: sign in refused with a wrong key, sign in (the master key never in the
DOM), a team, keys paged, a key in the team shown once and used for a chat completion (outside the browser),
its spend seen in the list, blocked and refused, unblocked, deleted with its confirmation; keyboard use (Escape,
the skip link, where the focus goes), an API error shown on its field, the spend filters and the chart's
table; every page visited without console errors or CSP violations.

Waits are for conditions (generous timeouts for a debug build on a loaded machine), never fixed sleeps.
"""

import json
import os
import re
import shutil
import time
import urllib.error
import urllib.request
import uuid

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

BASE = os.environ.get("LLM_UI_BASE", "http://127.0.0.1:4555").rstrip("/")
MASTER = os.environ.get("LLM_UI_MASTER_KEY", "sk-master-ui")
ARTIFACTS = os.environ.get("LLM_UI_ARTIFACTS", "target/ui-artifacts")
DOCS = os.environ.get("LLM_UI_DOCS", "")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
TIMEOUT_MS = 30_000
POLL_S = 30  # how long data written after a request (spend) may take to show
PAGES = ["keys", "teams", "users", "customers", "models", "spend"]
RUN = uuid.uuid4().hex[:6]


def http(method, path, body=None, key=None):
    """(status, headers, parsed JSON or text) of a call to the gateway, outside the browser."""
    req = urllib.request.Request(BASE + path, method=method)
    if key:
        req.add_header("Authorization", "Bearer " + key)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, data, timeout=30) as r:
            status, headers, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, e.headers, e.read()
    try:
        return status, headers, json.loads(raw)
    except ValueError:
        return status, headers, raw.decode(errors="replace")


def chat(key):
    status, _, body = http(
        "POST",
        "/chat/completions",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello from the UI test"}]},
        key,
    )
    return status, body


class Browser:
    """One page, with every console error, page error and CSP violation it reports."""

    def __init__(self, pw):
        self.browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        self.context = self.browser.new_context(viewport={"width": 1280, "height": 800})
        # Recorded by the browser itself (an init script is not subject to the page's CSP).
        self.context.add_init_script(
            "document.addEventListener('securitypolicyviolation', (e) => {"
            " (window.__csp = window.__csp || []).push(e.violatedDirective + ' ' + e.blockedURI); });"
        )
        self.page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors = []
        self.page.on(
            "console",
            lambda m: self.errors.append("console: " + m.text) if m.type == "error" else None,
        )
        self.page.on("pageerror", lambda e: self.errors.append("pageerror: " + str(e)))

    def csp_violations(self):
        return self.page.evaluate("window.__csp || []")

    def assert_clean(self, where):
        problems = self.errors + ["csp: " + v for v in self.csp_violations()]
        assert not problems, f"{where}: console errors or CSP violations: {problems}"

    def close(self):
        self.browser.close()


@pytest.fixture(scope="module")
def browser():
    os.makedirs(ARTIFACTS, exist_ok=True)
    with sync_playwright() as pw:
        b = Browser(pw)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def ui(browser, request):
    """The shared page; a screenshot of it is kept when a test fails. The steps build on each other: after
    a failed one, the next are skipped (the run still fails)."""
    failed = request.session.testsfailed
    if failed:
        pytest.skip("an earlier step failed")
    yield browser
    if request.session.testsfailed > failed:
        browser.page.screenshot(path=os.path.join(ARTIFACTS, f"failure-{request.node.name}.png"))


# ---- helpers on the page --------------------------------------------------------------------------------------


def settled(page, name):
    """Waits until page `name` is drawn and no API call runs."""
    page.wait_for_selector(f'body:not(.is-busy) #app[data-page="{name}"][aria-busy="false"]')


def go(page, name):
    page.locator(f'#nav a[data-page="{name}"]').click()
    settled(page, name)


def sign_in(page, key):
    page.fill("#master-key", key)
    page.click("#signin")


def refresh(page, name):
    page.locator(".page-head").get_by_role("button", name="Refresh", exact=True).click()
    settled(page, name)


def poll(page, name, check, what):
    """Refreshes page `name` until `check()` holds (spend is written shortly after a request)."""
    deadline = time.monotonic() + POLL_S
    while not check():
        assert time.monotonic() < deadline, f"{what} did not show within {POLL_S} s"
        page.wait_for_timeout(300)  # poll interval of a bounded wait
        refresh(page, name)


def focused(page, js_test, arg=None):
    """Waits until the focused element passes `js_test` (a JS function of the element and `arg`)."""
    page.wait_for_function(
        f"([arg]) => {{ const a = document.activeElement; return !!a && ({js_test})(a, arg); }}", arg=[arg]
    )


def focused_label(page, label):
    focused(page, "(a, l) => a.getAttribute('aria-label') === l", label)


def assert_no_master(page, where):
    """The master key is in no attribute, text or input of the page."""
    html = page.evaluate("document.documentElement.outerHTML")
    values = page.evaluate("[...document.querySelectorAll('input')].map((i) => i.value)")
    assert MASTER not in html, f"{where}: the master key is in the DOM"
    assert not any(MASTER in v for v in values), f"{where}: the master key is in an input"


def pager_pages(page):
    """(page, pages) of the pager, (1, 1) when there is one page."""
    nav = page.locator("nav.pager")
    if not nav.count():
        return 1, 1
    m = re.search(r"Page (\d+) of (\d+)", nav.inner_text())
    assert m, nav.inner_text()
    return int(m.group(1)), int(m.group(2))


def dialog(page):
    d = page.locator("dialog[open]")
    d.wait_for()
    return d


def submit(page, d, label):
    d.get_by_role("button", name=label, exact=True).click()
    d.wait_for(state="detached")


def money(text):
    """The first dollar amount of a cell (`$0.000008 / $5.00` is 0.000008)."""
    m = re.search(r"\$([0-9][0-9,]*(?:\.[0-9]+)?)", text)
    assert m, f"no amount in {text!r}"
    return float(m.group(1).replace(",", ""))


def shoot(page, name):
    # Dismiss the notices (they also expire by themselves, so one may be gone before its click).
    deadline = time.monotonic() + 10
    while page.locator("#notice button").count() and time.monotonic() < deadline:
        try:
            page.locator("#notice button").first.click(timeout=1000)
        except PlaywrightTimeout:
            pass
    path = os.path.join(ARTIFACTS, name + ".png")
    page.screenshot(path=path)
    if DOCS:
        os.makedirs(DOCS, exist_ok=True)
        shutil.copyfile(path, os.path.join(DOCS, name + ".png"))


# ---- the tests (in order: they share one signed-in page) --------------------------------------------------


def test_headers():
    for path in ["/ui", "/ui/app.js", "/ui/app.css"]:
        status, headers, _ = http("GET", path)
        assert status == 200, (path, status)
        csp = headers.get("Content-Security-Policy", "")
        assert "script-src 'self'" in csp and "default-src 'none'" in csp, (path, csp)
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, (path, csp)
        assert headers.get("X-Frame-Options") == "DENY", path
        assert headers.get("X-Content-Type-Options") == "nosniff", path


def test_sign_in(ui):
    page = ui.page
    page.goto(BASE + "/ui")
    try:
        page.wait_for_selector("#master-key", timeout=TIMEOUT_MS)
    except Exception as e:
        raise AssertionError(
            "the UI did not draw its sign-in form: is the real UI compiled in (or LLM_UI_DIR set)?"
        ) from e
    # A wrong master key is refused with the API's own message.
    sign_in(page, "sk-not-the-master-key")
    err = page.locator("#signin-error")
    err.wait_for(state="visible")
    assert "refused" in err.inner_text() and "master key" in err.inner_text()
    assert page.locator("#nav").is_hidden()
    # The browser logs the refused call (401) as a console error: that one is expected.
    assert all("401" in e for e in ui.errors), ui.errors
    ui.errors.clear()
    # The skip link neither routes nor clears a half-typed key.
    page.fill("#master-key", "sk-typed")
    page.focus(".skip")
    page.keyboard.press("Enter")
    focused(page, "(a) => a.id === 'app'")
    assert page.locator("#master-key").input_value() == "sk-typed"
    sign_in(page, MASTER)
    settled(page, "keys")
    assert page.locator("#nav").is_visible()
    assert_no_master(page, "signed in")
    # The key is nowhere but in the page's memory.
    stored = page.evaluate(
        "[document.cookie, JSON.stringify(localStorage), JSON.stringify(sessionStorage), location.href]"
    )
    assert not any(MASTER in s for s in stored), stored
    ui.assert_clean("sign in")


def test_team_key_spend_block_delete(ui):
    page = ui.page
    team = "ui-team-" + RUN
    alias = "ui-key-" + RUN

    # A team.
    go(page, "teams")
    page.click("#create-team")
    d = dialog(page)
    d.get_by_label("Name").fill(team)
    d.get_by_label("Max budget (USD)").fill("10")
    submit(page, d, "Create team")
    row = page.locator("tr[data-team]", has_text=team)
    row.wait_for()
    team_id = row.get_attribute("data-team")

    # Enough keys for two pages, made outside the browser; Next and Previous go through them.
    bulk = [f"bulk-{RUN}-{i:02}" for i in range(30)]
    for a in bulk:
        status, _, made = http("POST", "/key/generate", {"key_alias": a}, MASTER)
        assert status == 200, made
    go(page, "keys")
    assert pager_pages(page) == (1, 2), pager_pages(page)
    page.locator("nav.pager").get_by_role("button", name="Next").click()
    settled(page, "keys")
    assert pager_pages(page) == (2, 2)
    page.locator(f'tr[data-alias="{bulk[-1]}"]').wait_for()
    page.locator("nav.pager").get_by_role("button", name="Previous").click()
    settled(page, "keys")
    assert pager_pages(page) == (1, 2)
    page.locator(f'tr[data-alias="{bulk[0]}"]').wait_for()

    # A key in the team, shown once, on the last page where it is listed; the focus on its Copy button.
    page.click("#create-key")
    d = dialog(page)
    d.get_by_label("Alias").fill(alias)
    d.get_by_label("Team", exact=True).select_option(team_id)
    d.get_by_label("Max budget (USD)").fill("5")
    d.get_by_label("Requests per minute").fill("100")
    submit(page, d, "Create key")
    settled(page, "keys")
    key = page.locator("#new-key").input_value()
    assert key.startswith("sk-") and len(key) > 20, key
    focused(page, "(a) => a.textContent === 'Copy' && !!a.closest('.reveal')")
    page.locator(".reveal").get_by_role("button", name="Copy").click()
    page.locator(".reveal [role=status]").filter(has_text=re.compile("Copied|Selected")).wait_for()
    row = page.locator(f'tr[data-alias="{alias}"]')
    row.wait_for()
    assert team in row.inner_text()
    assert pager_pages(page) == (2, 2)

    # The bulk keys deleted: page 2 is gone, the list shows its last page (with the key).
    status, _, body = http("POST", "/key/delete", {"key_aliases": bulk}, MASTER)
    assert status == 200, body
    refresh(page, "keys")
    row.wait_for()
    assert pager_pages(page) == (1, 1)

    # Used outside the browser.
    status, body = chat(key)
    assert status == 200, body

    # Its spend shows up in the list (written by the gateway shortly after the request).
    poll(page, "keys", lambda: money(row.locator(".spend").inner_text()) > 0, "the key's spend")

    # A reload forgets the master key: signing in again is needed.
    page.reload()
    page.wait_for_selector("#master-key")
    assert page.locator("#nav").is_hidden()
    sign_in(page, MASTER)
    settled(page, "keys")
    assert page.locator("#new-key").count() == 0, "the new key must be shown only once"
    assert_no_master(page, "signed in again")

    # Blocked: the gateway refuses it. The focus moves to the row's Unblock button.
    row.get_by_role("button", name=f"Block key {alias}", exact=True).click()
    row.locator(".badge", has_text="Blocked").wait_for()
    focused_label(page, f"Unblock key {alias}")
    status, body = chat(key)
    assert status in (401, 403), (status, body)

    # Unblocked: accepted again.
    row.get_by_role("button", name=f"Unblock key {alias}", exact=True).click()
    row.locator(".badge", has_text="Active").wait_for()
    focused_label(page, f"Block key {alias}")
    status, body = chat(key)
    assert status == 200, body

    # Edited: a new budget; the focus back on the row's (redrawn) Edit button.
    row.get_by_role("button", name=f"Edit key {alias}", exact=True).click()
    d = dialog(page)
    d.get_by_label("Max budget (USD)").fill("7.5")
    submit(page, d, "Save")
    row.locator(".spend", has_text="$7.50").wait_for()
    focused_label(page, f"Edit key {alias}")

    # Deleted, after the confirmation.
    row.get_by_role("button", name=f"Delete key {alias}", exact=True).click()
    d = dialog(page)
    assert "cannot be undone" in d.inner_text()
    submit(page, d, "Delete")
    row.wait_for(state="detached")
    status, body = chat(key)
    assert status in (401, 403), (status, body)
    focused(page, "(a) => a.tagName === 'H1'")
    ui.assert_clean("keys")


def test_keyboard(ui):
    page = ui.page
    go(page, "keys")
    # Escape closes a dialog; the focus goes back to its opener.
    page.focus("#create-key")
    page.keyboard.press("Enter")
    dialog(page)
    page.keyboard.press("Escape")
    page.locator("dialog").wait_for(state="detached")
    focused(page, "(a) => a.id === 'create-key'")
    # The skip link, the first stop of the Tab order: focuses the content, the page stays.
    before = page.evaluate("location.hash")
    # The focus at the top of the document (the body, focusable for a moment), then one Tab.
    page.evaluate("const b = document.body; b.tabIndex = -1; b.focus(); b.removeAttribute('tabindex')")
    page.keyboard.press("Tab")
    focused(page, "(a) => a.classList.contains('skip')")
    page.keyboard.press("Enter")
    focused(page, "(a) => a.id === 'app'")
    assert page.evaluate("location.hash") == before
    assert page.locator("#app").get_attribute("data-page") == "keys"
    assert page.locator("#create-key").count() == 1
    ui.assert_clean("keyboard")


def test_team_members(ui):
    page = ui.page
    team = "ui-team-" + RUN
    go(page, "teams")
    page.locator("tr[data-team]", has_text=team).get_by_role("link", name="Members & keys").click()
    page.wait_for_selector("#add-member")
    settled(page, "teams")
    for user, role in [("ui-user-" + RUN, "admin"), ("ui-guest-" + RUN, "user")]:
        page.click("#add-member")
        d = dialog(page)
        d.get_by_label("User id").fill(user)
        d.get_by_label("Role").select_option(role)
        submit(page, d, "Add member")
        page.locator("section", has_text="Members").locator("tr", has_text=user).wait_for()
    guest = page.locator("tr", has_text="ui-guest-" + RUN)
    guest.get_by_role("button", name=f"Remove member ui-guest-{RUN}", exact=True).click()
    submit(page, dialog(page), "Remove")
    guest.wait_for(state="detached")
    # A key made outside the UI, used once: the team's keys list shows it with its spend.
    team_id = page.evaluate("decodeURIComponent(location.hash.split('/')[2])")
    status, _, made = http("POST", "/key/generate", {"key_alias": "demo-" + RUN, "team_id": team_id, "max_budget": 2}, MASTER)
    assert status == 200, made
    assert chat(made["key"])[0] == 200
    refresh(page, "teams")
    page.locator(f'tr[data-alias="demo-{RUN}"]').wait_for()
    ui.assert_clean("team")


def test_other_pages(ui):
    page = ui.page
    # Something on each page for the screenshots.
    go(page, "users")
    page.click("#create-user")
    d = dialog(page)
    d.get_by_label("User id").fill("ui-user-" + RUN)
    d.get_by_label("Email").fill(f"ui-{RUN}@example.com")
    d.get_by_label("Max budget (USD)").fill("20")
    submit(page, d, "Create user")
    page.locator("tr[data-user]", has_text="ui-user-" + RUN).wait_for()
    # The same id again: the API's 400 names the field, which is marked and focused. The browser logs the
    # refused call as a console error: that one (and only it) is expected.
    page.click("#create-user")
    d = dialog(page)
    d.get_by_label("User id").fill("ui-user-" + RUN)
    ui.errors.clear()
    d.get_by_role("button", name="Create user", exact=True).click()
    d.locator(".form-error", has_text="already exists").wait_for()
    field = d.get_by_label("User id")
    assert field.get_attribute("aria-invalid") == "true"
    focused(page, "(a) => a.name === 'user_id' && !!a.closest('dialog')")
    deadline = time.monotonic() + 10
    while not ui.errors and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert len(ui.errors) == 1 and "400" in ui.errors[0], ui.errors
    ui.errors.clear()
    d.get_by_role("button", name="Cancel").click()
    d.wait_for(state="detached")

    go(page, "customers")
    page.click("#create-customer")
    d = dialog(page)
    d.get_by_label("End user id").fill("ui-customer-" + RUN)
    d.get_by_label("Max budget (USD)").fill("3")
    submit(page, d, "Create")
    page.locator("tr[data-customer]", has_text="ui-customer-" + RUN).wait_for()

    go(page, "models")
    page.click("#add-model")
    d = dialog(page)
    d.get_by_label("Model name (what clients ask for)").fill("ui-model-" + RUN)
    d.get_by_label("Upstream model").fill("mock/ui-model")
    d.get_by_label("Input cost per token (USD)").fill("0.000001")
    submit(page, d, "Add model")
    mine = page.locator("tr[data-model]", has_text="ui-model-" + RUN)
    mine.wait_for()
    # A deployment of the config file is changed in the file: no Edit or Delete for it.
    config_row = page.locator("tr[data-model]", has_text="mock/gpt-4o-mini")
    assert "Defined in the config file" in config_row.inner_text()
    assert config_row.get_by_role("button").count() == 0
    # The API's own: its secret field is never autofilled, the URL's credentials are not shown.
    mine.get_by_role("button", name=re.compile("^Edit model ui-model-")).click()
    d = dialog(page)
    assert d.locator("input[name=api_key]").get_attribute("autocomplete") == "new-password"
    assert "Credentials in the URL are not shown" in d.inner_text()
    d.get_by_role("button", name="Cancel").click()
    d.wait_for(state="detached")
    focused(page, "(a) => (a.getAttribute('aria-label') || '').startsWith('Edit model ui-model-')")
    ui.assert_clean("other pages")


def spend_rows(page):
    return page.locator("#spend-logs tbody tr")


def column(page, n):
    """The texts of column `n` (1-based) of the spend log."""
    return [t.strip() for t in page.locator(f"#spend-logs tbody tr td:nth-child({n})").all_inner_texts()]


def apply_filters(page):
    page.locator("#spend-filters").get_by_role("button", name="Apply").click()
    settled(page, "spend")


def test_spend_filters(ui):
    """The spend page's filters, the chart and its table."""
    page = ui.page
    form = page.locator("#spend-filters")
    go(page, "spend")
    poll(page, "spend", lambda: page.locator("#spend-chart .chart rect").count() > 0, "the spend chart")
    assert spend_rows(page).count() >= 1
    # The chart's values as a table: a row for the last day of the range (today).
    last_day = form.locator("[name=end_date]").input_value()
    first_day = form.locator("[name=start_date]").input_value()
    page.locator("#spend-chart details summary").click()
    page.locator(f'#spend-chart tr[data-day="{last_day}"]').wait_for()

    # By key: every row is that key's.
    demo = "demo-" + RUN
    option = form.locator("[name=api_key] option", has_text=demo + " ·")
    form.locator("[name=api_key]").select_option(option.get_attribute("value"))
    apply_filters(page)
    poll(page, "spend", lambda: spend_rows(page).count() > 0, f"the spend log of {demo}")
    keys = column(page, 2)
    assert keys and all(k == demo for k in keys), keys

    # By model, and the chart by model.
    form.locator("[name=api_key]").select_option("")
    form.locator("[name=model]").select_option("gpt-4o-mini")
    form.locator("[name=group_by]").select_option("model")
    apply_filters(page)
    models = column(page, 6)
    assert models and all(m == "gpt-4o-mini" for m in models), models
    page.locator("#spend-chart .legend", has_text="gpt-4o-mini").wait_for()

    # From after To: an error on From, nothing asked.
    form.locator("[name=start_date]").fill("2030-01-02")
    form.locator("[name=end_date]").fill("2030-01-01")
    form.get_by_role("button", name="Apply").click()
    page.locator("#spend-error", has_text="From must not be after To").wait_for()
    assert form.locator("[name=start_date]").get_attribute("aria-invalid") == "true"
    focused(page, "(a) => a.name === 'start_date'")
    assert models == column(page, 6), "the log was queried"

    # Back to the defaults (for the screenshot).
    form.locator("[name=start_date]").fill(first_day)
    form.locator("[name=end_date]").fill(last_day)
    form.locator("[name=model]").select_option("")
    form.locator("[name=group_by]").select_option("team")
    apply_filters(page)
    assert page.locator("#spend-error").is_hidden()
    ui.assert_clean("spend")


def test_screenshots_phone_sign_out(ui):
    page = ui.page
    for name in PAGES:
        go(page, name)
        shoot(page, name)
        ui.assert_clean(name)

    # Readable on a phone: the page itself never scrolls sideways (tables scroll in their own box).
    page.set_viewport_size({"width": 390, "height": 800})
    go(page, "keys")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width}px wide on a phone"
    page.screenshot(path=os.path.join(ARTIFACTS, "keys-phone.png"))
    ui.assert_clean("phone")

    # Sign out forgets the key.
    page.click("#signout")
    page.wait_for_selector("#master-key")
    assert page.locator("#nav").is_hidden()
    assert_no_master(page, "signed out")
