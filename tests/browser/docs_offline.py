"""Loads gatehouse's /docs in headless Chromium (Debian's, never a downloaded browser) and
checks that the operation list renders while every request stays on the instance.

Usage: docs_offline.py BASE_URL CHROMIUM SCREENSHOT. Prints one JSON line: the operations
found, the requests made, those that left the instance, and console errors."""

import json
import sys
from urllib.parse import urlparse

from playwright.sync_api import sync_playwright

base, chromium, screenshot = sys.argv[1], sys.argv[2], sys.argv[3]
origin = urlparse(base).netloc
requests, foreign, errors = [], [], []

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    page = browser.new_page()

    def route(route):
        url = route.request.url
        requests.append(url)
        if urlparse(url).netloc != origin and not url.startswith("data:"):
            foreign.append(url)
            route.abort()
        else:
            route.continue_()

    page.route("**/*", route)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(base + "/docs/", wait_until="networkidle")
    page.wait_for_selector(".opblock", timeout=15000)
    operations = page.locator(".opblock-summary-path").all_inner_texts()
    page.screenshot(path=screenshot, full_page=False)
    browser.close()

print(json.dumps({
    "operations": operations,
    "requests": requests,
    "foreign": foreign,
    "errors": errors,
}))
