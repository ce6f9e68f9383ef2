"""The dashboard in a real browser (headless Chromium through Selenium).

Run by tests/dashboard_browser.rs, which starts the nodes and passes:
  IARNET_A      http://host:port of a node with auth.tokens and the Docker provider
  IARNET_B      http://host:port of a second node of the same mesh (no tokens)
  IARNET_TOKEN  a token node A accepts
  IARNET_IMAGE  an image node A's engine holds
  IARNET_APP_URL  a Git repository holding a Compose file
  IARNET_SHOTS  where to save a screenshot of each page
  AXE_JS        axe-core's axe.min.js

Fails on any console error the steps did not expect, and on any serious or
critical axe-core violation.
"""

import json
import os
import sys
import time

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

A = os.environ["IARNET_A"]
B = os.environ["IARNET_B"]
TOKEN = os.environ["IARNET_TOKEN"]
IMAGE = os.environ["IARNET_IMAGE"]
APP_URL = os.environ["IARNET_APP_URL"]
SHOTS = os.environ["IARNET_SHOTS"]
AXE = open(os.environ["AXE_JS"], encoding="utf-8").read()
WAIT = 60


def step(msg):
    print(f"== {msg}", flush=True)


def driver():
    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
              "--disable-gpu", "--window-size=1400,1100", "--lang=en-US"):
        opts.add_argument(a)
    opts.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(service=service, options=opts)


class Checks:
    def __init__(self, d):
        self.d = d
        self.problems = []

    def console(self, where, expected=()):
        """Console errors since the last look; those naming an expected
        text (a refusal the step provoked) are allowed."""
        for e in self.d.get_log("browser"):
            if e["level"] != "SEVERE":
                continue
            if any(x in e["message"] for x in expected):
                continue
            self.problems.append(f"console error on {where}: {e['message']}")

    def axe(self, where):
        self.d.execute_script(AXE)
        violations = self.d.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "axe.run(document, {resultTypes: ['violations']})"
            ".then(r => done(r.violations)).catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));"
        )
        for v in violations:
            if v.get("impact") in ("serious", "critical"):
                nodes = [n.get("html", "")[:160] for n in v.get("nodes", [])[:3]]
                self.problems.append(
                    f"axe {v['impact']} on {where}: {v['id']}: {v['help']} {nodes}")

    def shot(self, name):
        os.makedirs(SHOTS, exist_ok=True)
        self.d.save_screenshot(os.path.join(SHOTS, f"{name}.png"))

    def page(self, name):
        self.console(name)
        self.axe(name)
        self.shot(name)


def wait(d, cond, what, timeout=WAIT):
    try:
        # Live updates replace fragments under the test's feet: look again.
        return WebDriverWait(d, timeout, poll_frequency=0.2,
                             ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
                             ).until(cond)
    except Exception:
        print(f"timed out waiting for {what}; page now:\n{d.page_source[:4000]}", file=sys.stderr)
        raise


def text_in(css, text):
    def check(d):
        els = d.find_elements(By.CSS_SELECTOR, css)
        return any(text in e.text for e in els)
    return check


def click(d, by, value):
    """Clicks an element that a live update may replace at any moment."""
    def attempt(d):
        d.find_element(by, value).click()
        return True
    wait(d, attempt, f"clicking {value}")


def click_in_row(d, table_css, text, button_xpath):
    """Clicks a button of the row holding `text` (the row may be replaced
    by a live update between finding and clicking it)."""
    def attempt(d):
        for r in d.find_elements(By.CSS_SELECTOR, f"{table_css} tbody tr"):
            if text in r.text:
                r.find_element(By.XPATH, button_xpath).click()
                return True
        return False
    wait(d, attempt, f"a row with {text}")


def row_text(d, table_css, text):
    def find(d):
        return next((r.text for r in d.find_elements(By.CSS_SELECTOR, f"{table_css} tbody tr")
                     if text in r.text), None)
    return wait(d, find, f"a row with {text}")


def submit(d, form_css):
    d.find_element(By.CSS_SELECTOR, f"{form_css} button[type=submit]").click()


def main():
    d = driver()
    c = Checks(d)
    try:
        run(d, c)
    finally:
        d.quit()
    if c.problems:
        print("\n".join(c.problems), file=sys.stderr)
        sys.exit(1)
    print("dashboard browser test passed")


def run(d, c):
    step("a page asks for the token first")
    d.get(f"{A}/ui/")
    wait(d, ec.presence_of_element_located((By.ID, "f-token")), "the login form")
    assert "/ui/login" in d.current_url, d.current_url
    c.page("login")

    step("a wrong token is refused on the form")
    d.find_element(By.ID, "f-token").send_keys("wrong-token-wrong-token")
    submit(d, "form.panel")
    wait(d, ec.presence_of_element_located((By.ID, "f-token-error")), "the token error")
    c.console("login (wrong token)", expected=["401"])

    step("the right token logs in")
    d.find_element(By.ID, "f-token").send_keys(TOKEN)
    submit(d, "form.panel")
    wait(d, text_in("header.top", "signed in as"), "the overview after login")
    wait(d, ec.presence_of_element_located((By.CSS_SELECTOR, "#cards .card")), "the cards")
    c.page("overview")

    for name, path, marker in [
        ("resources", "/ui/resources", "#res-table table"),
        ("mesh", "/ui/mesh", "#members table"),
        ("deployments", "/ui/deployments", "#dep-list table"),
        ("deploy", "/ui/deploy", "#f-image"),
        ("applications", "/ui/apps", "#app-cards"),
    ]:
        step(f"the {name} page")
        d.get(f"{A}{path}")
        wait(d, ec.presence_of_element_located((By.CSS_SELECTOR, marker)), name)
        c.page(name)

    step("the mesh page lists both nodes")
    d.get(f"{A}/ui/mesh")
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#members tbody tr")) >= 2, "two members")

    step("a bad URL in the add-resource form shows the field's error")
    d.get(f"{A}/ui/resources")
    d.find_element(By.ID, "f-name").send_keys("browser-engine")
    d.find_element(By.ID, "f-endpoint").send_keys("not a url")
    submit(d, "#add + form")
    wait(d, ec.presence_of_element_located((By.ID, "f-endpoint-error")), "the endpoint error")
    assert d.find_element(By.ID, "f-name").get_attribute("value") == "browser-engine"
    c.console("resources (bad URL)", expected=["422"])
    c.axe("resources with errors")
    c.shot("resources-error")

    step("a good endpoint is tested and added, then removed")
    ep = d.find_element(By.ID, "f-endpoint")
    ep.clear()
    ep.send_keys("unix:///var/run/docker.sock")
    d.find_element(By.ID, "f-labels").send_keys("zone=<script>alert(1)</script>")
    submit(d, "#add + form")
    wait(d, text_in(".notice.ok", "browser-engine added"), "the provider added notice")
    row = row_text(d, "#res-table", "browser-engine")
    assert "<script>alert(1)</script>" in row, "a hostile label shows as text"
    c.console("resources (added)")
    click_in_row(d, "#res-table", "browser-engine", ".//form[contains(@action,'/remove')]//button")
    wait(d, text_in(".notice.ok", "removed"), "the removed notice")
    wait(d, lambda d: not any("browser-engine" in r.text
                              for r in d.find_elements(By.CSS_SELECTOR, "#res-table tbody tr")), "its row gone")

    step("deploy from the form; it turns running without a reload")
    d.get(f"{A}/ui/deploy")
    d.find_element(By.ID, "f-image").send_keys(IMAGE)
    d.find_element(By.ID, "f-command").send_keys(
        "sh -c 'i=0; while true; do echo browser-line-$i; i=$((i+1)); sleep 0.3; done'")
    d.find_element(By.ID, "f-cpu").send_keys("100m")
    d.find_element(By.ID, "f-memory").send_keys("32Mi")
    Select(d.find_element(By.ID, "f-priority")).select_by_value("batch")
    submit(d, "form.panel")
    wait(d, ec.presence_of_element_located((By.ID, "dep-detail")), "the deployment's page")
    d.execute_script("window.__iarnetMarker = 'same page';")
    wait(d, text_in("#dep-detail .badge", "running"), "the running state", timeout=90)
    assert d.execute_script("return window.__iarnetMarker") == "same page", "the page reloaded"
    c.page("deployment")
    dep_url = d.current_url.split("?")[0]

    step("its logs follow live and can be searched")
    click(d, By.LINK_TEXT, "Logs")
    wait(d, text_in("#log-lines", "browser-line-"), "log lines")
    d.execute_script("window.__iarnetMarker = 'logs';")
    count = len(d.find_elements(By.CSS_SELECTOR, "#log-lines div"))
    wait(d, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log-lines div")) > count + 3, "new lines streamed in")
    assert d.execute_script("return window.__iarnetMarker") == "logs", "the page reloaded"
    d.find_element(By.ID, "log-search").send_keys("browser-line-1")
    wait(d, lambda d: all("browser-line-1" in e.text
                          for e in d.find_elements(By.CSS_SELECTOR, "#log-lines div") if e.is_displayed()),
         "only matching lines shown")
    c.page("logs")

    step("the other node lists the deployment too")
    d.get(f"{B}/ui/deployments")
    rid = dep_url.rsplit("/", 1)[1]
    wait(d, lambda d: "running" in d.find_element(By.ID, "dep-list").text, "the deployment on node B")
    c.page("deployments-node-b")
    d.get(f"{A}/ui/")

    step("stop it from its page")
    d.get(dep_url)
    wait(d, text_in("#dep-detail .badge", "running"), "the running state")
    click(d, By.XPATH, "//form[contains(@action,'/stop')]//button")
    wait(d, text_in("#dep-detail .badge", "stopped"), "the stopped state", timeout=90)
    c.console("deployment (stopped)")
    print(f"deployment {rid} stopped", flush=True)

    step("import an application; its graph and code")
    d.get(f"{A}/ui/apps")
    d.find_element(By.ID, "f-name").send_keys("shop")
    d.find_element(By.ID, "f-git_url").send_keys(APP_URL)
    submit(d, "form.panel")
    wait(d, ec.presence_of_element_located((By.CSS_SELECTOR, ".dag svg")), "the dependency graph")
    graph = d.find_element(By.CSS_SELECTOR, ".dag svg").get_attribute("aria-label")
    assert "web depends on db" in graph, graph
    c.page("application")
    click(d, By.LINK_TEXT, "Code")
    click(d, By.LINK_TEXT, "docker-compose.yml")
    box = wait(d, ec.presence_of_element_located((By.ID, "f-content")), "the editor")
    box.send_keys("# edited in the browser\n")
    submit(d, "form[action$='/files']")
    wait(d, text_in(".notice.ok", "Saved docker-compose.yml"), "the saved notice")
    assert "edited in the browser" in d.find_element(By.ID, "f-content").get_attribute("value")
    c.page("code")

    step("log out")
    d.find_element(By.CSS_SELECTOR, "form.logout button").click()
    wait(d, ec.presence_of_element_located((By.ID, "f-token")), "the login form again")
    d.get(f"{A}/ui/resources")
    wait(d, ec.presence_of_element_located((By.ID, "f-token")), "the login form for a page")
    c.console("after logout")


if __name__ == "__main__":
    main()
