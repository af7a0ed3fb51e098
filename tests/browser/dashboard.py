"""Drives gatehouse's /dashboard in headless Chromium (Debian's, never a downloaded browser)
for the integration tests in tests/integration/dashboard.rs.

Usage: dashboard.py CHROMIUM. The browser starts once; then each line on stdin is a command,
{"scenario": NAME, "base": URL, "out": PNG, ...}, run in a fresh browser context (its own
sessionStorage). A scenario may stop to let the test act behind the page's back: it writes
{"event": ...} and reads one line back. Each command ends with one line,
{"done": REPORT} or {"failed": TRACEBACK, "report": REPORT}. Every report holds what the page
asked for ("requests", "responses"), what left the instance ("foreign", aborted), console
errors, uncaught page errors and Content-Security-Policy violations.
"""

import json
import sys
import time
import traceback
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

TIMEOUT_MS = 15000

CSP_LISTENER = """
document.addEventListener('securitypolicyviolation', (e) => window.__gatehouseCsp({
  directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample,
  source: e.sourceFile, line: e.lineNumber,
}));
"""


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def receive():
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    return json.loads(line)


class Watch:
    """Everything the page does that a test may hold against it."""

    def __init__(self, context, base):
        self.origin = urlparse(base).netloc
        self.report = {
            "requests": [], "responses": [], "foreign": [], "console_errors": [],
            "page_errors": [], "csp": [],
        }
        context.route("**/*", self.route)
        context.expose_binding("__gatehouseCsp", lambda _source, v: self.report["csp"].append(v))
        context.add_init_script(CSP_LISTENER)

    def route(self, route):
        request = route.request
        url = urlparse(request.url)
        self.report["requests"].append({"method": request.method, "url": request.url})
        if url.scheme in ("http", "https") and url.netloc == self.origin:
            route.continue_()
        else:
            self.report["foreign"].append(request.url)
            route.abort()

    def page(self, page):
        def console(message):
            if message.type == "error":
                self.report["console_errors"].append(
                    {"text": message.text, "url": message.location.get("url", "")})
        page.on("console", console)
        page.on("pageerror", lambda error: self.report["page_errors"].append(str(error)))
        page.on("response", lambda r: self.report["responses"].append({
            "method": r.request.method, "path": path_of(r.url), "status": r.status,
            "at": time.time()}))
        return page


def path_of(url):
    parsed = urlparse(url)
    return parsed.path + ("?" + parsed.query if parsed.query else "")


def wait_until(page, predicate, arg=None, timeout_ms=TIMEOUT_MS):
    """Polls `predicate` (a JS function of `arg`) until it returns true. Not
    page.wait_for_function: that one evaluates a string inside the page, which the page's
    policy refuses ('unsafe-eval'), and would count as the page's own violation."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(predicate, arg):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_ms} ms waiting for {predicate} ({arg!r})")
        time.sleep(0.05)


def refreshes(page):
    return page.evaluate("() => Number(document.body.dataset.refreshes || 0)")


def wait_refresh(page, after=None):
    """Waits until the page has finished a refresh of its panels (after `after` of them)."""
    after = refreshes(page) if after is None else after
    wait_until(page, "(n) => Number(document.body.dataset.refreshes || 0) > n", after)


def quiet(page):
    wait_until(page, "() => document.body.dataset.inflight === '0'")


def log_in(page, base, token):
    page.goto(base + "/dashboard", wait_until="load")
    page.fill("#token", token)
    page.click("#login-button")
    page.wait_for_selector("#board", state="visible", timeout=TIMEOUT_MS)
    wait_until(page, "() => Number(document.body.dataset.refreshes || 0) >= 1")


def storage(page):
    return page.evaluate("""() => ({
      session: Object.keys(sessionStorage), local: localStorage.length, cookie: document.cookie,
    })""")


def text(page, selector):
    return page.locator(selector).inner_text()


def chart_data(page):
    return page.evaluate("""() => {
      const chart = Chart.getChart(document.getElementById('decisions-chart'));
      return {
        labels: chart.data.labels.slice(),
        datasets: Object.fromEntries(chart.data.datasets.map((d) => [d.category, d.data.slice()])),
        legend: chart.data.datasets.map((d) => d.label),
        patterns: chart.data.datasets.map((d) => d.backgroundColor instanceof CanvasPattern),
      };
    }""")


def decisions_table(page):
    return page.evaluate("""() => [...document.querySelectorAll('#decisions-table tbody tr')]
      .map((r) => ({ key: r.dataset.key, cells: [...r.cells].map((c) => c.textContent.trim()) }))""")


def overflow(page):
    return page.evaluate("""() => {
      const width = window.innerWidth;
      const wider = [...document.querySelectorAll('body *')]
        .filter((e) => e.getBoundingClientRect().right > width + 0.5 && e.getClientRects().length)
        .slice(0, 10).map((e) => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + '.' + e.className);
      return { scroll_width: document.documentElement.scrollWidth, inner_width: width, wider };
    }""")


def decisions(page, args, report):
    """Log in, wait for the table to hold every check, read the chart for each selection."""
    log_in(page, args["base"], args["token"])
    wait_until(page, """(total) => {
          const row = document.querySelector('#decisions-table tbody tr[data-key="all"]');
          return Boolean(row) && Number(row.cells[5].textContent) === total;
        }""", args["expect_total"])
    report["options"] = page.eval_on_selector_all("#d-endpoint option", "os => os.map(o => o.value)")
    report["chart"] = {}
    for option in report["options"]:
        page.select_option("#d-endpoint", option)
        report["chart"][option] = chart_data(page)
    page.select_option("#d-endpoint", "all")
    report["table"] = decisions_table(page)
    report["storage"] = storage(page)
    page.locator("#decisions-card").scroll_into_view_if_needed()
    page.screenshot(path=args["out"], full_page=True)


def kill(page, args, report):
    """Turn the kill switch on from the page."""
    log_in(page, args["base"], args["token"])
    report["disabled_without_reason"] = page.locator("#kill-button").is_disabled()
    report["button_before"] = text(page, "#kill-button")
    page.fill("#kill-reason", args["reason"])
    report["clicked_at_ms"] = time.time() * 1000
    page.click("#kill-button")
    wait_until(page, "() => document.getElementById('s-kill').textContent.startsWith('ON')")
    report["answered_at_ms"] = time.time() * 1000
    report["status"] = text(page, "#kill-form .action-status")
    report["kill_shown"] = text(page, "#s-kill")
    report["version_shown"] = text(page, "#s-version")
    report["button_after"] = text(page, "#kill-button")
    page.screenshot(path=args["out"], full_page=True)


def conflict(page, args, report):
    """Pause the page, let the test change the settings behind its back, then act."""
    log_in(page, args["base"], args["token"])
    page.click("#pause")
    quiet(page)
    before = text(page, "#s-version")
    report["version_before"] = before
    send({"event": "paused", "version": int(before)})
    receive()
    report["version_when_acting"] = text(page, "#s-version")
    page.select_option("#g-mode", "DISABLED")
    page.fill("#g-reason", args["reason"])
    page.click("#g-button")
    page.wait_for_selector("#global-form .action-status.conflict", timeout=TIMEOUT_MS)
    report["message"] = text(page, "#global-form .action-status")
    wait_until(page, "(v) => document.getElementById('s-version').textContent !== v", before)
    quiet(page)
    report["version_after"] = text(page, "#s-version")
    report["mode_after"] = text(page, "#s-mode")
    report["reason_shown"] = text(page, "#s-reason")
    page.screenshot(path=args["out"], full_page=True)


def refused(page, args, report):
    """A plain user's token, then a forged one: both stay on the login box."""
    page.goto(args["base"] + "/dashboard/", wait_until="load")
    page.fill("#token", args["user_token"])
    page.click("#login-button")
    page.wait_for_selector("#login-error", state="visible", timeout=TIMEOUT_MS)
    report["user_message"] = text(page, "#login-error")
    report["user_board_hidden"] = page.locator("#board").is_hidden()
    report["user_storage"] = storage(page)
    page.fill("#token", args["forged_token"])
    page.click("#login-button")
    wait_until(page,
               "() => document.getElementById('login-error').textContent.startsWith('token refused')")
    report["forged_message"] = text(page, "#login-error")
    report["forged_board_hidden"] = page.locator("#board").is_hidden()
    report["forged_storage"] = storage(page)
    page.screenshot(path=args["out"], full_page=True)


def tour(page, args, report):
    """The recommended step, then (after the test's checks) every panel, window, endpoint and
    filter, an endpoint's override set and removed, the global mode, then log out."""
    log_in(page, args["base"], args["token"])
    report["storage_logged_in"] = storage(page)
    wait_until(page, "() => document.getElementById('apply-button').textContent.includes(':')")
    report["apply_disabled_without_reason"] = page.locator("#apply-button").is_disabled()
    report["apply_label"] = text(page, "#apply-button")
    page.fill("#apply-reason", "tour: start observing")
    page.click("#apply-button")
    page.wait_for_selector("#apply-form .action-status.ok", timeout=TIMEOUT_MS)
    report["applied"] = text(page, "#apply-form .action-status")
    quiet(page)
    send({"event": "observing"})
    receive()
    for window in ["24h", "7d", "1h"]:
        after = refreshes(page)
        page.select_option("#window", window)
        wait_refresh(page, after)
        report.setdefault("ranges", {})[window] = text(page, "#d-range")
    for option in page.eval_on_selector_all("#d-endpoint option", "os => os.map(o => o.value)"):
        page.select_option("#d-endpoint", option)
    page.select_option("#audit-filters select[name=decision]", "would_deny")
    page.fill("#audit-filters input[name=user]", args["xss_user"])
    # Every row is the user's (the others' filtered out): the filtered tail came back.
    wait_until(page, """(user) => {
        const rows = [...document.querySelectorAll('#audit tbody tr')];
        return rows.length > 0 && rows.every((r) => r.cells[3] && r.cells[3].textContent === user);
      }""", args["xss_user"])
    report["audit_rows"] = page.eval_on_selector_all(
        "#audit tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    report["top_users"] = page.eval_on_selector_all(
        "#top-users tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")
    report["images_in_board"] = page.evaluate("() => document.querySelectorAll('#board img').length")
    report["xss_ran"] = page.evaluate("() => window.__xss !== undefined")
    page.fill("#audit-filters input[name=user]", "")
    page.select_option("#audit-filters select[name=decision]", "")
    for mode, reason in [("LOG_ONLY", "tour: pilot"), ("", "tour: back to the global mode")]:
        page.fill("#e-name", args["endpoint"])
        page.select_option("#e-mode", mode)
        page.fill("#e-reason", reason)
        page.click("#e-button")
        page.wait_for_selector("#endpoint-form .action-status.ok", timeout=TIMEOUT_MS)
        report.setdefault("endpoint_changes", []).append(text(page, "#endpoint-form .action-status"))
        quiet(page)
    page.select_option("#g-mode", "ENFORCED")
    page.fill("#g-percent", "50")
    page.fill("#g-reason", "tour: half of the users")
    page.click("#g-button")
    page.wait_for_selector("#global-form .action-status.ok", timeout=TIMEOUT_MS)
    report["global_change"] = text(page, "#global-form .action-status")
    quiet(page)
    report["history_top"] = text(page, "#history li:first-child")
    page.click("#pause")
    page.click("#pause")
    wait_refresh(page)
    quiet(page)
    page.screenshot(path=args["out"], full_page=True)
    page.click("#logout")
    page.wait_for_selector("#login", state="visible", timeout=TIMEOUT_MS)
    report["storage_logged_out"] = storage(page)
    report["board_rows_after_logout"] = page.evaluate(
        "() => document.querySelectorAll('#board tbody tr').length")


def screens(page, args, report):
    """A phone-sized screen, then a wide one: nothing wider than the screen."""
    page.set_viewport_size({"width": 360, "height": 740})
    log_in(page, args["base"], args["token"])
    page.wait_for_selector("#audit tbody tr:not(.empty)", timeout=TIMEOUT_MS)
    quiet(page)
    report["phone"] = overflow(page)
    page.screenshot(path=args["phone_out"], full_page=True)
    page.set_viewport_size({"width": 1440, "height": 900})
    wait_refresh(page)
    quiet(page)
    report["wide"] = overflow(page)
    page.screenshot(path=args["out"], full_page=True)
    if args.get("readme_out"):
        page.screenshot(path=args["readme_out"], full_page=False)


SCENARIOS = {f.__name__: f for f in [decisions, kill, conflict, refused, tour, screens]}


def run(browser, args):
    context = browser.new_context(viewport={"width": 1440, "height": 900},
                                  service_workers="block")
    watch = Watch(context, args["base"])
    page = watch.page(context.new_page())
    page.set_default_timeout(TIMEOUT_MS)
    try:
        SCENARIOS[args["scenario"]](page, args, watch.report)
        # Late events (a refresh under way) are reported too.
        quiet(page)
        send({"done": watch.report})
    except Exception:  # reported to the test, which fails with it
        try:
            page.screenshot(path=args["out"] + ".failed.png", full_page=True)
        except Exception:
            pass
        send({"failed": traceback.format_exc(), "report": watch.report})
    finally:
        context.close()


def main():
    chromium = sys.argv[1]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        send({"ready": browser.version})
        while True:
            run(browser, receive())


if __name__ == "__main__":
    main()
