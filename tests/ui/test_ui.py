"""Browser test of the admin UI (`GET /ui`), end to end against a running gateway.

Run by `scripts/ui-test`, which starts the gateway (master key, one priced mock model, store_model_in_db)
and sets:
  LLM_UI_BASE        the gateway's URL, e.g. http://127.0.0.1:4555
  LLM_UI_MASTER_KEY  its master key
  LLM_UI_ARTIFACTS   where screenshots go
  LLM_UI_DOCS        where one screenshot per page is copied (docs/ui); empty: not copied
  CHROMIUM           the browser (default /usr/bin/chromium: Debian's, never a downloaded one)

Headless Chromium through Playwright: sign in refused with a wrong key, sign in, a team, a key in it shown
once and used for a chat completion (outside the browser), its spend seen in the list, blocked and refused,
unblocked, deleted with its confirmation; every page visited without console errors or CSP violations.
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
TIMEOUT_MS = 20_000
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
    sign_in(page, MASTER)
    settled(page, "keys")
    assert page.locator("#nav").is_visible()
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

    # A key in it, shown once.
    go(page, "keys")
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
    page.locator(".reveal").get_by_role("button", name="Copy").click()
    page.locator(".reveal [role=status]").filter(has_text=re.compile("Copied|Selected")).wait_for()
    row = page.locator(f'tr[data-alias="{alias}"]')
    row.wait_for()
    assert team in row.inner_text()

    # Used outside the browser.
    status, body = chat(key)
    assert status == 200, body

    # Its spend shows up in the list (written by the gateway shortly after the request).
    deadline = time.monotonic() + 15
    while True:
        page.click("#refresh")
        settled(page, "keys")
        spend = money(row.locator(".spend").inner_text())
        if spend > 0 or time.monotonic() > deadline:
            break
        page.wait_for_timeout(300)  # poll interval of a bounded wait
    assert spend > 0, "the key's spend did not appear within 15 s"

    # A reload forgets the master key: signing in again is needed.
    page.reload()
    page.wait_for_selector("#master-key")
    assert page.locator("#nav").is_hidden()
    sign_in(page, MASTER)
    settled(page, "keys")
    assert page.locator("#new-key").count() == 0, "the new key must be shown only once"

    # Blocked: the gateway refuses it.
    row.get_by_role("button", name="Block").click()
    row.locator(".badge", has_text="Blocked").wait_for()
    status, body = chat(key)
    assert status in (401, 403), (status, body)

    # Unblocked: accepted again.
    row.get_by_role("button", name="Unblock").click()
    row.locator(".badge", has_text="Active").wait_for()
    status, body = chat(key)
    assert status == 200, body

    # Edited: a new budget.
    row.get_by_role("button", name="Edit").click()
    d = dialog(page)
    d.get_by_label("Max budget (USD)").fill("7.5")
    submit(page, d, "Save")
    row.locator(".spend", has_text="$7.50").wait_for()

    # Deleted, after the confirmation.
    row.get_by_role("button", name="Delete").click()
    d = dialog(page)
    assert "cannot be undone" in d.inner_text()
    submit(page, d, "Delete")
    row.wait_for(state="detached")
    status, body = chat(key)
    assert status in (401, 403), (status, body)
    ui.assert_clean("keys")


def test_team_members(ui):
    page = ui.page
    team = "ui-team-" + RUN
    go(page, "teams")
    page.locator("tr[data-team]", has_text=team).get_by_role("link", name="Members & keys").click()
    settled(page, "teams")
    for user, role in [("ui-user-" + RUN, "admin"), ("ui-guest-" + RUN, "user")]:
        page.click("#add-member")
        d = dialog(page)
        d.get_by_label("User id").fill(user)
        d.get_by_label("Role").select_option(role)
        submit(page, d, "Add member")
        page.locator("section", has_text="Members").locator("tr", has_text=user).wait_for()
    guest = page.locator("tr", has_text="ui-guest-" + RUN)
    guest.get_by_role("button", name="Remove").click()
    submit(page, dialog(page), "Remove")
    guest.wait_for(state="detached")
    # A key made outside the UI, used once: the team's keys list shows it with its spend.
    team_id = page.evaluate("decodeURIComponent(location.hash.split('/')[2])")
    status, _, made = http("POST", "/key/generate", {"key_alias": "demo-" + RUN, "team_id": team_id, "max_budget": 2}, MASTER)
    assert status == 200, made
    assert chat(made["key"])[0] == 200
    page.get_by_role("button", name="Refresh").click()
    settled(page, "teams")
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
    page.locator("tr[data-model]", has_text="ui-model-" + RUN).wait_for()
    # A deployment of the config file cannot be deleted through the API: its error shows in the dialog.
    page.locator("tr[data-model]", has_text="mock/gpt-4o-mini").get_by_role("button", name="Delete").click()
    d = dialog(page)
    d.get_by_role("button", name="Delete", exact=True).click()
    d.locator(".form-error", has_text="config file").wait_for()
    d.get_by_role("button", name="Cancel").click()
    d.wait_for(state="detached")
    ui.errors[:] = [e for e in ui.errors if "status of 400" not in e]  # the refused call, expected

    go(page, "spend")
    page.locator(".chart rect").first.wait_for()
    assert page.locator("tbody tr").count() >= 1

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
