"""The web dashboard in headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium) against a real `proctor up`: sign-in, submit, live status, job page, leaderboard."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait

from .conftest import ROOT, Service

pytestmark = pytest.mark.docker

BROWSER = Path("/usr/bin/chromium")
DRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
WINDOW = "1280,1100"
PAGE_SECONDS = 15  # a page or an API answer shows up
JOB_SECONDS = 120  # a busybox job builds, runs and is scored
BUSYBOX = "FROM proctor/busybox:latest\n"
DATASET = "breast-cancer"
HELLO = "hello from the dashboard"
FINAL_STATES = {"succeeded", "failed", "cancelled"}
EXPECTED_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def dockerfile(directory: Path, command: str) -> Path:
    path = directory / "Dockerfile"
    path.write_text(f'{BUSYBOX}CMD ["sh", "-c", {json.dumps(command)}]\n')
    return path


def admin_token(service: Service) -> str:
    token: str = json.loads((service.home / "credentials.json").read_text())["token"]
    return token


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    if not (BROWSER.exists() and DRIVER.exists()):
        pytest.fail("chromium and chromedriver are missing: run scripts/install-browser.sh")
    options = Options()
    options.binary_location = str(BROWSER)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={WINDOW}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=DriverService(executable_path=str(DRIVER)), options=options)
    try:
        yield driver
        # The policy must not block the dashboard's own files.
        blocked = [
            e for e in driver.get_log("browser") if "Content Security Policy" in e["message"]
        ]
        assert not blocked, blocked
    finally:
        driver.quit()


def wait(driver: WebDriver, seconds: float = PAGE_SECONDS) -> WebDriverWait[WebDriver]:
    return WebDriverWait(driver, seconds, ignored_exceptions=[WebDriverException])


def screenshot(driver: WebDriver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / name))


def text_of(driver: WebDriver, css: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, css).text


def sign_in(driver: WebDriver, service: Service, token: str, *, shot: str | None = None) -> None:
    driver.get(f"{service.url}/")
    field = wait(driver).until(ec.visibility_of_element_located((By.ID, "token")))
    field.send_keys(token)
    if shot:
        screenshot(driver, shot)
    driver.find_element(By.ID, "sign-in").click()


def submit_page(driver: WebDriver) -> None:
    driver.find_element(By.LINK_TEXT, "Submit").click()
    wait(driver).until(ec.visibility_of_element_located((By.ID, "file")))


def test_dashboard_submits_a_job_and_follows_it_live_to_the_leaderboard(
    service: Service, browser: WebDriver, tmp_path: Path
) -> None:
    shutil.copytree(ROOT / "examples" / "datasets" / DATASET, service.home / "datasets" / DATASET)
    path = dockerfile(
        tmp_path, f"echo '{HELLO}'; echo '{{\"perf\": 0.5, \"steps\": 3}}' > /data/perf.json"
    )

    sign_in(browser, service, admin_token(service), shot="01-sign-in.png")
    wait(browser).until(ec.visibility_of_element_located((By.ID, "nav")))
    stored = browser.execute_script(
        "return [sessionStorage.getItem('proctor.token'), localStorage.length, document.cookie]"
    )
    submit_page(browser)
    # The datasets come from the API; pick ours once it is listed.
    wait(browser).until(lambda d: DATASET in text_of(d, "#dataset"))
    browser.find_element(By.ID, "file").send_keys(str(path))
    Select(browser.find_element(By.ID, "dataset")).select_by_value(DATASET)
    browser.find_element(By.ID, "name").send_keys("dash-busybox")
    browser.find_element(By.ID, "timeout").send_keys("60")
    browser.execute_script("window.proctorTestMark = 'no reload'")
    browser.find_element(By.ID, "submit").click()

    row = wait(browser).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, "tr[data-job-id]"))
    )
    job_id = row.get_attribute("data-job-id")
    flash = text_of(browser, "#flash")
    wait(browser, JOB_SECONDS).until(
        ec.presence_of_element_located(
            (By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"] .status[data-status="succeeded"]')
        )
    )
    row_text = text_of(browser, f'tr[data-job-id="{job_id}"]')
    screenshot(browser, "02-jobs.png")
    mark = browser.execute_script("return window.proctorTestMark")

    browser.find_element(By.LINK_TEXT, job_id).click()
    wait(browser).until(lambda d: text_of(d, "#performance") == "0.5")
    wait(browser).until(lambda d: HELLO in text_of(d, "#log-run"))
    wait(browser).until(lambda d: text_of(d, "#log-build").strip() != "")
    states = [
        li.get_attribute("data-state")
        for li in browser.find_elements(By.CSS_SELECTOR, "#timeline li")
    ]
    metrics = text_of(browser, "#metrics")
    cancel_hidden = not browser.find_element(By.ID, "cancel").is_displayed()
    screenshot(browser, "03-job.png")
    browser.execute_script("document.getElementById('log-run').scrollIntoView()")
    screenshot(browser, "03-job-logs.png")

    browser.find_element(By.LINK_TEXT, "Leaderboard").click()
    entry = wait(browser).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, '#leaderboard tr[data-user="admin"]'))
    )
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#chart svg circle")))
    screenshot(browser, "04-leaderboard.png")

    assert stored == [admin_token(service), 0, ""]  # the token is in sessionStorage only
    assert flash.startswith("Submitted job dash-busybox")
    assert "dash-busybox" in row_text and DATASET in row_text and "0.5" in row_text
    assert mark == "no reload"  # the status cell changed without the page reloading
    assert states[0] == "queued" and states[-1] == "succeeded" and "running" in states
    assert "steps" in metrics
    assert cancel_hidden
    assert entry.text.split()[:3] == ["1", "admin", "0.5"] and job_id in entry.text


def test_dashboard_refuses_a_wrong_token(service: Service, browser: WebDriver) -> None:
    answer = httpx.get(
        f"{service.url}/api/v1/jobs", headers={"Authorization": "Bearer wrong-token"}
    )

    sign_in(browser, service, "wrong-token")
    wait(browser).until(lambda d: text_of(d, "#sign-in-error") != "")
    screenshot(browser, "05-wrong-token.png")

    assert answer.status_code == 401
    assert text_of(browser, "#sign-in-error") == answer.json()["error"]["message"]
    assert browser.execute_script("return sessionStorage.length") == 0
    assert not browser.find_element(By.ID, "nav").is_displayed()


def test_dashboard_shows_the_apis_error_for_a_bad_submission(
    service: Service, browser: WebDriver, tmp_path: Path
) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(f"{BUSYBOX}RUNN true\n")
    token = admin_token(service)

    sign_in(browser, service, token)
    wait(browser).until(ec.visibility_of_element_located((By.ID, "nav")))
    submit_page(browser)
    browser.find_element(By.ID, "file").send_keys(str(path))
    browser.find_element(By.ID, "submit").click()
    wait(browser).until(lambda d: text_of(d, "#submit-error") != "")
    screenshot(browser, "06-submit-error.png")
    shown = text_of(browser, "#submit-error")
    with path.open("rb") as upload:
        answer = httpx.post(
            f"{service.url}/api/v1/jobs",
            headers={"Authorization": f"Bearer {token}"},
            files={"file": ("Dockerfile", upload)},
        )

    assert answer.status_code >= 400
    assert shown == answer.json()["error"]["message"]
    assert "line 2" in shown
    assert (
        httpx.get(
            f"{service.url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}
        ).json()["items"]
        == []
    )


def test_dashboard_is_served_with_strict_security_headers(service: Service) -> None:
    page = httpx.get(f"{service.url}/")
    script = httpx.get(f"{service.url}/static/app.js")
    missing = httpx.get(f"{service.url}/static/nothing.js")
    outside = httpx.get(f"{service.url}/static/..%2Fapi%2Froutes%2Fweb.py")
    schema = httpx.get(f"{service.url}/openapi.json").json()

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/static/app.js">' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    for response in (page, script):
        assert {key: response.headers.get(key) for key in EXPECTED_HEADERS} == EXPECTED_HEADERS
        assert response.headers["content-security-policy"] == csp
    assert script.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in script.text
    assert missing.status_code == 404 and outside.status_code == 404
    assert "/" not in schema["paths"] and "/static/{name}" not in schema["paths"]


def test_dashboard_packs_a_folder_honouring_dockerignore_and_shows_names_as_text(
    service: Service, browser: WebDriver, tmp_path: Path
) -> None:
    context = tmp_path / "context"
    (context / "src").mkdir(parents=True)
    (context / "src" / "keep.txt").write_text("kept\n")
    (context / "src" / "secret.txt").write_text("left out\n")
    (context / "notes.md").write_text("left out\n")
    (context / ".dockerignore").write_text("# not for the image\n*.md\nsrc/secret.txt\n")
    # The job succeeds only if the archive kept what it must and left out what it must not.
    check = (
        "test -f /ctx/src/keep.txt && test ! -e /ctx/src/secret.txt && test ! -e /ctx/notes.md"
        " && ls -R /ctx && echo '{\"perf\": 0.25}' > /data/perf.json"
    )
    (context / "Dockerfile").write_text(
        f'{BUSYBOX}COPY . /ctx\nCMD ["sh", "-c", {json.dumps(check)}]\n'
    )
    name = '<img src=x onerror="document.title=1">'

    sign_in(browser, service, admin_token(service))
    wait(browser).until(ec.visibility_of_element_located((By.ID, "nav")))
    submit_page(browser)
    browser.find_element(By.ID, "folder").send_keys(str(context))
    wait(browser).until(lambda d: text_of(d, "#selection").startswith("Folder:"))
    browser.find_element(By.ID, "name").send_keys(name)
    browser.find_element(By.ID, "submit").click()
    row = wait(browser).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, "tr[data-job-id]"))
    )
    job_id = row.get_attribute("data-job-id")
    wait(browser, JOB_SECONDS).until(
        lambda d: text_of(d, f'tr[data-job-id="{job_id}"] .status') in FINAL_STATES
    )
    status = text_of(browser, f'tr[data-job-id="{job_id}"] .status')
    cells = [
        td.text for td in browser.find_elements(By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"] td')
    ]
    images = browser.find_elements(By.CSS_SELECTOR, "main img")

    assert status == "succeeded", httpx.get(
        f"{service.url}/api/v1/jobs/{job_id}/logs",
        headers={"Authorization": f"Bearer {admin_token(service)}"},
    ).text
    assert cells[1] == name and not images  # a submitter's name is text, never markup
    assert browser.title != "1"


def test_dashboard_streams_a_running_jobs_log_cancels_it_and_filters_by_status(
    service: Service, browser: WebDriver, tmp_path: Path
) -> None:
    # Sleeps longer than any wait below: the job can only end by the Cancel button.
    path = dockerfile(tmp_path, f"echo '{HELLO}'; sleep 600")

    sign_in(browser, service, admin_token(service))
    wait(browser).until(ec.visibility_of_element_located((By.ID, "nav")))
    submit_page(browser)
    browser.find_element(By.ID, "file").send_keys(str(path))
    browser.find_element(By.ID, "submit").click()
    row = wait(browser).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, "tr[data-job-id]"))
    )
    job_id = row.get_attribute("data-job-id")
    browser.find_element(By.LINK_TEXT, job_id).click()
    # The run log shows the line while the job still runs: it is streamed, not fetched at the end.
    wait(browser, JOB_SECONDS).until(
        lambda d: HELLO in text_of(d, "#log-run") and text_of(d, "#job-status .status") == "running"
    )
    screenshot(browser, "07-running.png")
    wait(browser).until(ec.element_to_be_clickable((By.ID, "cancel"))).click()
    wait(browser, JOB_SECONDS).until(lambda d: text_of(d, "#job-status .status") == "cancelled")
    wait(browser).until(ec.invisibility_of_element_located((By.ID, "cancel")))

    browser.find_element(By.LINK_TEXT, "Jobs").click()
    Select(
        wait(browser).until(ec.element_to_be_clickable((By.ID, "status-filter")))
    ).select_by_value("succeeded")
    wait(browser).until(ec.visibility_of_element_located((By.ID, "jobs-empty")))
    Select(browser.find_element(By.ID, "status-filter")).select_by_value("cancelled")
    wait(browser).until(
        ec.visibility_of_element_located((By.CSS_SELECTOR, f'tr[data-job-id="{job_id}"]'))
    )

    assert browser.current_url.endswith("#/jobs?status=cancelled")
