"""The service's page in a real headless browser (Chromium via Selenium): it loads, enrols a
person from two LFW photos, identifies a third and shows the decision, the face box and its yaw."""
from __future__ import annotations

import shutil

import pytest

from .service_util import ADMIN, Server, lfw_people

pytest.importorskip("fastapi")
selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")


def _browser_paths():
    chrome = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chrome or not driver:
        pytest.skip("no chromium + chromedriver here (.ci/run installs Debian's chromium and chromium-driver)")
    return chrome, driver


@pytest.fixture()
def browser(tmp_path, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chrome, driver = _browser_paths()
    monkeypatch.setenv("SE_OFFLINE", "true")  # never let Selenium Manager look for a driver online
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              f"--user-data-dir={tmp_path / 'chrome-profile'}", "--window-size=1200,1000"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    d.set_page_load_timeout(60)
    yield d
    d.quit()


def test_page_enrols_and_identifies(lfw, tmp_path, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    person = lfw_people(lfw, 1, photos=3)[0]
    name = person[0].parent.name.replace("_", " ")
    with Server(str(tmp_path / "page.gallery"), tmp_path, name="page") as srv:
        browser.get(srv.url + "/")
        assert "pifr access control" in browser.title
        wait = WebDriverWait(browser, 120)
        browser.find_element(By.ID, "key").send_keys(ADMIN)
        browser.find_element(By.ID, "enrol-name").send_keys(name)
        browser.find_element(By.ID, "enrol-files").send_keys("\n".join(str(p) for p in person[:2]))
        browser.find_element(By.ID, "enrol-btn").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "enrol-result"), "Enrolled"))
        assert f"Enrolled {name}: 2 photo(s) added" in browser.find_element(By.ID, "enrol-result").text
        wait.until(EC.text_to_be_present_in_element((By.ID, "subjects"), name))

        browser.find_element(By.ID, "id-files").send_keys(str(person[2]))
        browser.find_element(By.ID, "id-btn").click()
        wait.until(lambda d: d.find_element(By.ID, "decision").get_attribute("class") in ("accept", "reject"))
        decision = browser.find_element(By.ID, "decision").text
        assert decision.startswith(f"ACCEPT: {name}") and "yaw" in decision, decision
        # The photo is drawn with the face box: the canvas holds the 250x250 LFW image.
        assert browser.execute_script("return [document.getElementById('view').width, "
                                      "document.getElementById('view').height]") == [250, 250]
        assert '"yaw"' in browser.find_element(By.ID, "details").text
