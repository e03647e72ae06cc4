"""The web page of ``instance-search serve``: its HTTP API (Flask's test client) and the page end to end
in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium).

``make test`` installs Chromium first when it is missing and apt-get is usable (``make browser``);
the browser test skips, saying why, only when Chromium is still not there.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from instance_search import cli, methods
from instance_search.index import load_index
from instance_search.web import app as web
from helpers import build_mini_cnn_index, build_mini_index, load_params_with_schema

LIMIT = 300_000  # upload limit for these tests (bytes)


@pytest.fixture(scope="module")
def mini_params(tmp_path_factory):
    _, params_file = build_mini_index(tmp_path_factory.getbasetemp() / "mini-index")
    return load_params_with_schema(params_file)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    index_dir, _ = build_mini_index(tmp_path_factory.getbasetemp() / "mini-index")
    return load_index(index_dir)


@pytest.fixture(scope="module")
def every_index(tmp_path_factory, index):
    """One mini index of each registered method (sift first), on the same 15 images."""
    base = tmp_path_factory.getbasetemp() / "mini-index"
    return [index] + [load_index(build_mini_cnn_index(base, m)) for m in methods.names() if m != "sift"]


@pytest.fixture
def uploads(tmp_path):
    folder = tmp_path / "uploads"
    folder.mkdir()
    return folder


@pytest.fixture
def client(index, uploads, mini_params):
    return web.create_app([index, index], params=mini_params, upload_dir=uploads, max_upload_bytes=LIMIT).test_client()


def _jpeg(index, i=0) -> bytes:
    return index.image_path(i).read_bytes()


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_page_and_assets_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and b"<canvas" in page.data
    for name in ("app.js", "style.css"):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200
        # offline: nothing is loaded from another host
        assert b"http://" not in asset.data and b"https://" not in asset.data
    assert b"http://" not in page.data and b"https://" not in page.data
    assert client.get("/static/../app.py").status_code == 404
    ids = re.findall(r'id="([^"]+)"', page.data.decode())
    assert len(ids) == len(set(ids)), "duplicate element ids: the page's script would pick the wrong element"


def test_indexes_images_and_thumbnails(client, index):
    info = client.get("/api/indexes").get_json()
    assert [ix["name"] for ix in info["indexes"]] == ["mini/sift", "mini/sift"]
    assert info["similarities"] == ["cosine", "weighted_cosine"] and info["max_upload_bytes"] == LIMIT
    listing = client.get("/api/indexes/0/images?limit=4&filter=obj01").get_json()
    assert listing["total"] == 3 and [im["name"] for im in listing["images"]] == ["obj01_v0", "obj01_v1", "obj01_v2"]
    thumb = client.get(f"/api/indexes/0/images/{listing['images'][0]['id']}/thumb")
    assert thumb.mimetype == "image/jpeg"
    picture = cv2.imdecode(np.frombuffer(thumb.data, np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape[0] == web.THUMB_HEIGHT


def test_query_answers_with_windows(client, index):
    q = index.gnd.queries[0]
    r = client.post("/api/query", json={"index": 1, "image": {"index": 0, "id": q.image}, "box": list(q.box),
                                        "similarity": "weighted_cosine", "results": 5})
    assert r.status_code == 200, r.get_json()
    answer = r.get_json()
    assert answer["similarity"] == "weighted_cosine" and answer["image"] == index.gnd.images[q.image].name
    assert len(answer["hits"]) == 5 and answer["hits"][0]["image"] == q.image
    assert all(h["thumb"].startswith("/api/indexes/1/images/") for h in answer["hits"])
    # a window where the verification found the object (the query's own image, at least), none elsewhere
    assert len(answer["hits"][0]["window"]) == 4
    assert all(h["window"] is None or len(h["window"]) == 4 for h in answer["hits"])
    assert "path" not in answer["hits"][0]  # the server's file system is not shown
    assert set(answer["timings"]) >= {"extract", "rank", "rerank", "server"}


def test_indexes_of_every_method_are_listed(every_index, uploads, mini_params):
    """The page's first call answers for each method alone and for all together, saying what the
    re-ranking checkbox does for each (asked of the method: their params differ)."""
    assert sorted(ix.method.name for ix in every_index) == sorted(methods.names())
    for chosen in [[ix] for ix in every_index] + [every_index]:
        client = web.create_app(chosen, params=mini_params, upload_dir=uploads).test_client()
        r = client.get("/api/indexes")
        assert r.status_code == 200, r.get_json()
        listed = r.get_json()["indexes"]
        assert [ix["name"] for ix in listed] == [ix.name for ix in chosen]
        assert all(ix["second_stage"] and ix["n_database"] == 15 for ix in listed)
    stages = {ix.method.name: ix.method.second_stage(mini_params[ix.method.name]) for ix in every_index}
    assert stages["gem"] == "alpha-QE over the top 2" and "best proposal" in stages["frcnn"]
    assert "spatial verification (first stage: ASMK*)" in stages["sift"] and "spatial verification" in stages["blcf"]


def test_query_of_the_frcnn_index_finds_the_other_views(tmp_path_factory, mini_params, uploads):
    """Every method serves the page; each query's other view, among 14 other images, is in its top 3 (not
    just itself: by chance all three would pass 1 time in 100)."""
    frcnn = load_index(build_mini_cnn_index(tmp_path_factory.getbasetemp() / "mini-index", "frcnn"))
    client = web.create_app([frcnn], params=mini_params, upload_dir=uploads).test_client()
    for q in frcnn.gnd.queries:
        r = client.post("/api/query", json={"image": {"id": q.image}, "box": list(q.box), "results": 6})
        assert r.status_code == 200, r.get_json()
        others = set(q.positives) - {q.image}
        found = [h["image"] for h in r.get_json()["hits"] if h["image"] != q.image][:3]
        assert set(found) & others, q.name


def test_rerank_false_and_whole_image(client, index):
    q = index.gnd.queries[0]
    plain = client.post("/api/query", json={"image": {"id": q.image}, "box": list(q.box), "rerank": False}).get_json()
    assert plain["reranked"] == 0 and all(h["window"] is None for h in plain["hits"])
    assert set(plain["timings"]) >= {"extract", "rank"} and "rerank" not in plain["timings"]
    whole = client.post("/api/query", json={"image": {"id": q.image}, "box": None}).get_json()
    assert whole["box"] is None and whole["first_stage"] == "gs" and whole["reranked"] > 0


@pytest.mark.parametrize("body, message", [
    ({"rerank": "false"}, "rerank 'false': expected true or false"),
    ({"rerank": 0}, "rerank 0: expected true or false"),
    ({"box": [True, 0, 5, 5]}, "four numbers"),
    ({"box": ["1", "2", "30", "40"]}, "four numbers"),
    ({"results": 2.5}, "results 2.5"),
    ({"results": True}, "results True"),
])
def test_only_json_booleans_and_numbers(client, body, message):
    r = client.post("/api/query", json={"image": {"id": 0}, **body})
    assert r.status_code == 400 and message in r.get_json()["error"], r.get_json()


def test_pagination_and_bad_offset_or_limit(client):
    past = client.get("/api/indexes/0/images?offset=1000&limit=5").get_json()
    assert past == {"total": 15, "images": []}
    page = client.get("/api/indexes/0/images?offset=14&limit=5").get_json()
    assert [im["id"] for im in page["images"]] == [14]
    for query in ("offset=abc", "limit=1.5", "offset=", "limit=ten"):
        r = client.get(f"/api/indexes/0/images?{query}")
        assert r.status_code == 400 and "offset and limit must be integers" in r.get_json()["error"], query


def test_an_unexpected_error_is_one_json_line_with_500(client, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(web.SearchIndex, "query", boom)  # the page queries through the API
    r = client.post("/api/query", json={"image": {"id": 0}})
    assert r.status_code == 500 and r.get_json() == {"error": "internal error (RuntimeError); the server log has the details"}
    assert b"Traceback" not in r.data and b"a bug" not in r.data


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:80", "127.0.0.1.nip.io", "localhost.evil:80",
                                  "127.0.0.2", "[::2]"])
def test_only_this_machine_names_are_answered(client, host):
    """DNS rebinding: a page whose name resolves to 127.0.0.1 still sends its own Host; it gets 421."""
    for r in (client.get("/api/indexes", headers={"Host": host}),
              client.get("/", headers={"Host": host}),
              client.post("/api/query", json={"image": {"id": 0}}, headers={"Host": host})):
        assert r.status_code == 421, (host, r.status_code)
    for ok in ("localhost", "127.0.0.1", "[::1]", "localhost:80", "127.0.0.1:80"):
        assert client.get("/api/indexes", headers={"Host": ok}).status_code == 200, ok


def test_cross_origin_posts_are_refused(client, index):
    q = index.gnd.queries[0]
    body = {"image": {"id": q.image}, "box": list(q.box), "results": 2}
    for origin in ("http://attacker.example", "http://127.0.0.1:9999", "null", "file://"):
        r = client.post("/api/query", json=body, headers={"Origin": origin})
        assert r.status_code == 403 and "cross-origin" in r.get_json()["error"], origin
        r = client.post("/api/uploads", data={"image": (io.BytesIO(_jpeg(index)), "a.jpg")}, headers={"Origin": origin})
        assert r.status_code == 403, origin
    assert client.post("/api/query", json=body, headers={"Origin": "http://localhost"}).status_code == 200


def test_queries_beyond_the_cap_get_503(client, monkeypatch, index, uploads, mini_params):
    monkeypatch.setattr(web, "MAX_CONCURRENT_QUERIES", 0)  # every slot taken
    busy = web.create_app([index], params=mini_params, upload_dir=uploads).test_client()
    r = busy.post("/api/query", json={"image": {"id": 0}})
    assert r.status_code == 503 and r.get_json()["error"].startswith("busy:")


def test_errors_name_the_upload_not_the_server_path(client, index, uploads):
    item = client.post("/api/uploads", data={"image": (io.BytesIO(_jpeg(index)), "mine.jpg")}).get_json()
    (uploads / f"{item['upload']}.jpg").unlink()  # gone from the disk (say, a cleaned temporary folder)
    r = client.post("/api/query", json={"image": {"upload": item["upload"]}})
    error = r.get_json()["error"]
    assert r.status_code == 400 and "mine.jpg" in error and str(uploads) not in error, error


def test_unsupported_upload_format(client):
    ok, gif = cv2.imencode(".bmp", np.zeros((20, 20, 3), np.uint8))  # BMP passes; a GIF does not
    assert ok
    from PIL import Image

    data = io.BytesIO()
    Image.new("RGB", (20, 20)).save(data, format="GIF")
    r = client.post("/api/uploads", data={"image": (io.BytesIO(data.getvalue()), "anim.gif")})
    assert r.status_code == 400 and "GIF images are not supported" in r.get_json()["error"]


def test_images_added_to_an_index_appear_on_reload(index, tmp_path, mini_params, capsys):
    """instance-search index --images, then --add while the page runs: the page lists the new images."""
    images = sorted(index.image_root.glob("*.jpg"))
    first, later = tmp_path / "first", tmp_path / "later"
    first.mkdir(), later.mkdir()
    for k, path in enumerate(images):
        (first if k < 10 else later).joinpath(path.name).symlink_to(path)
    params_file = index.path.parent.parent.parent / "params.yaml"  # the mini checkout's params (64 words)
    out = tmp_path / "own"
    assert cli.main(["index", "--images", str(first), "--method", "sift", "--out", str(out),
                     "--params", str(params_file)]) == 0
    client = web.create_app([load_index(out)], params=mini_params, upload_dir=tmp_path / "up").test_client()
    assert client.get("/api/indexes").get_json()["indexes"][0]["n_database"] == 10
    assert cli.main(["index", "--add", str(later), "--out", str(out), "--params", str(params_file)]) == 0
    info = client.get("/api/indexes").get_json()["indexes"][0]
    listing = client.get("/api/indexes/0/images?limit=100").get_json()
    assert info["n_database"] == listing["total"] == len(images)
    last = listing["images"][-1]
    r = client.post("/api/query", json={"image": {"id": last["id"]}, "results": 3})
    assert r.status_code == 200 and r.get_json()["hits"][0]["image"] == last["id"]  # an added image, found


@pytest.mark.parametrize("box, message", [
    ([1, 2, 3], "expected [x1, y1, x2, y2]"),
    ("10,10,50,50", "expected [x1, y1, x2, y2]"),
    ([50, 10, 10, 60], "x1 < x2"),
    ([0, 0, 10_000, 50], "is not inside obj01_v0 (320x240 pixels)"),
    ([-5, 0, 50, 50], "is not inside"),
    (["a", 0, 5, 5], "four numbers in pixels"),
])
def test_bad_box_is_400(client, index, box, message):
    r = client.post("/api/query", json={"image": {"id": index.gnd.queries[0].image}, "box": box})
    assert r.status_code == 400 and message in r.get_json()["error"]


@pytest.mark.parametrize("body, status, message", [
    ({"image": {"id": 999}}, 404, "unknown image 999"),
    ({"image": {"id": -1}}, 404, "unknown image -1"),
    ({"image": {"id": "3"}}, 404, "unknown image '3'"),
    ({"index": 7, "image": {"id": 0}}, 404, "unknown index 7"),
    ({"image": {"upload": "../../etc/passwd"}}, 404, "unknown upload"),
    ({"image": {"upload": "0" * 32}}, 404, "unknown upload"),
    ({"image": "obj01_v0.jpg"}, 400, "expected"),
    ({"image": {"id": 0}, "similarity": "l2"}, 400, "similarity 'l2'"),
    ({"image": {"id": 0}, "results": 0}, 400, "results 0"),
])
def test_unknown_or_wrong_input(client, body, status, message):
    r = client.post("/api/query", json=body)
    assert r.status_code == status and message in r.get_json()["error"]
    assert client.post("/api/query", data="not json").status_code == 400


def test_uploads(client, index, uploads, tmp_path, monkeypatch):
    """Accepted, rejected and oversized uploads; nothing written outside the uploads folder."""
    monkeypatch.chdir(tmp_path)
    index_before, cwd_before = _tree(index.path.parent), _tree(tmp_path)
    too_big = client.post("/api/uploads", data={"image": (io.BytesIO(b"\xff" * (LIMIT + 1)), "big.jpg")})
    assert too_big.status_code == 413
    assert too_big.get_json()["error"].startswith("upload too large: the limit is 0.286 MB")
    for data, name, message in [(b"plain text", "a.jpg", "not a readable image"),
                                (_jpeg(index)[:3000], "cut.jpg", "corrupt or truncated")]:
        r = client.post("/api/uploads", data={"image": (io.BytesIO(data), name)})
        assert r.status_code == 400 and message in r.get_json()["error"]
    assert client.post("/api/uploads", data={}).status_code == 400
    ok = client.post("/api/uploads", data={"image": (io.BytesIO(_jpeg(index)), "../../mine.jpg")})
    assert ok.status_code == 200
    item = ok.get_json()
    assert item["name"] == "mine.jpg" and (item["width"], item["height"]) == (320, 240)
    assert [p.name for p in uploads.iterdir()] == [f"{item['upload']}.jpg"]  # only the accepted file
    assert client.get(f"/api/uploads/{item['upload']}/view").mimetype == "image/jpeg"
    r = client.post("/api/query", json={"image": {"upload": item["upload"]}, "box": [20, 20, 300, 220], "results": 3})
    assert r.status_code == 200 and r.get_json()["image"] == "mine.jpg"
    after = {k: v for k, v in _tree(tmp_path).items() if not k.startswith("uploads")}
    assert after == {k: v for k, v in cwd_before.items() if not k.startswith("uploads")}
    assert _tree(index.path.parent) == index_before


def test_uploads_are_bounded_and_default_to_a_temporary_folder(index, tmp_path, monkeypatch, mini_params):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where mkdtemp puts the app's folder
    monkeypatch.setattr(web, "MAX_UPLOADS", 2)
    client = web.create_app([index], params=mini_params).test_client()
    ids = [client.post("/api/uploads", data={"image": (io.BytesIO(_jpeg(index, i)), f"{i}.jpg")}).get_json()["upload"]
           for i in range(3)]
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith("instance-search-uploads-")
    assert sorted(p.stem for p in folder.iterdir()) == sorted(ids[1:])  # the oldest was deleted
    assert client.post("/api/query", json={"image": {"upload": ids[0]}}).status_code == 404


def test_upload_with_too_many_pixels(client, monkeypatch):
    monkeypatch.setattr(web, "MAX_PIXELS", 100)
    ok, png = cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))
    r = client.post("/api/uploads", data={"image": (io.BytesIO(png.tobytes()), "wide.png")})
    assert r.status_code == 400 and "too many pixels (20x20; limit 0 megapixels)" in r.get_json()["error"]


def test_upload_beyond_the_decoder_bomb_limit_says_too_many_pixels(client, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow refuses more than twice this outright
    ok, png = cv2.imencode(".png", np.zeros((20, 20, 3), np.uint8))
    r = client.post("/api/uploads", data={"image": (io.BytesIO(png.tobytes()), "huge.png")})
    assert r.status_code == 400 and "too many pixels" in r.get_json()["error"]


def test_busy_port_is_one_line(index):
    import socket

    from instance_search.errors import InstanceSearchError

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        with pytest.raises(InstanceSearchError, match=r"cannot listen .*pass another --port"):
            web.make_server([index], held.getsockname()[1], params={})


# ------------------------------------------------------------------------------------ the browser


def _chromium() -> tuple[str, str]:
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("Chromium and chromedriver are not installed and could not be installed here (`make browser` "
                    "installs Debian's chromium and chromium-driver when run as root with apt-get)")
    return browser, driver


@pytest.fixture
def browser():
    from selenium import webdriver  # the dev extra (pip install -e '.[dev]'): imported, never skipped
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _chromium()
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for a driver online
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1000", "--disable-extensions"):
        options.add_argument(arg)  # --no-sandbox: tests run as root in CI
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    yield driver
    driver.quit()


@pytest.fixture
def server(index, uploads, mini_params):
    srv = web.make_server([index], 0, upload_dir=uploads, params=mini_params)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}/"
    srv.shutdown()
    thread.join(10)


def test_page_end_to_end_in_chromium(browser, server, index, uploads, tmp_path):
    """Pick a thumbnail, drag a box, read the results; switch similarity; upload a photo and query it."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 30)

    def text(element_id: str) -> str:
        return browser.find_element(By.ID, element_id).text

    def showing(name: str):
        return lambda b: (text("query-name").startswith(f"{name} ")
                          and b.find_element(By.ID, "canvas").get_attribute("data-ready") == "1")

    def drag_box(fx1: float, fy1: float, fx2: float, fy2: float) -> None:
        """Press at (fx1, fy1), move, release at (fx2, fy2): fractions of the canvas."""
        canvas = browser.find_element(By.ID, "canvas")
        w, h = canvas.size["width"], canvas.size["height"]
        dx, dy = (fx2 - fx1) * w / 2, (fy2 - fy1) * h / 2
        (ActionChains(browser).move_to_element_with_offset(canvas, round((fx1 - 0.5) * w), round((fy1 - 0.5) * h))
         .click_and_hold().move_by_offset(round(dx), round(dy)).move_by_offset(round(dx), round(dy))
         .release().perform())

    browser.get(server)
    wait.until(showing("obj01_v0"))  # the page starts on the first benchmark query's image
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#database img")) == 15)
    browser.find_element(By.CSS_SELECTOR, "#database img[title=obj02_v0]").click()
    wait.until(showing("obj02_v0"))
    drag_box(0.2, 0.2, 0.75, 0.75)
    wait.until(lambda b: text("status").startswith("15 results"))  # top 20 of a 15-image database
    x1, y1, x2, y2 = map(float, text("box-label").removeprefix("box ").split(","))
    assert 54 < x1 < 74 and 230 < x2 < 250 and 38 < y1 < 58 and 170 < y2 < 190  # 20%..75% of 320x240
    cards = browser.find_elements(By.CSS_SELECTOR, "#results .card")
    assert len(cards) == 15 and cards[0].find_element(By.TAG_NAME, "figcaption").text.endswith("obj02_v0")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#results .window")) >= 1  # the verified results' windows

    Select(browser.find_element(By.ID, "similarity")).select_by_value("weighted_cosine")
    wait.until(lambda b: "weighted_cosine" in text("status"))

    photo = tmp_path / "my photo.jpg"
    photo.write_bytes(index.image_path(index.gnd.queries[2].image).read_bytes())
    browser.find_element(By.ID, "upload").send_keys(str(photo))
    wait.until(showing("my photo.jpg"))
    drag_box(0.1, 0.1, 0.9, 0.9)
    wait.until(lambda b: text("status").startswith("15 results"))
    first = browser.find_element(By.CSS_SELECTOR, "#results .card figcaption").text
    assert first.endswith(index.gnd.images[index.gnd.queries[2].image].name)  # it finds its own copy
    assert len(list(uploads.iterdir())) == 1

    shot = tmp_path / "web.png"
    assert browser.save_screenshot(str(shot))
    picture = cv2.imread(str(shot))
    assert shot.stat().st_size > 20_000 and picture.shape[1] >= 1000
    assert picture.std() > 20  # not a blank page


@pytest.fixture
def every_server(every_index, uploads, mini_params):
    srv = web.make_server(every_index, 0, upload_dir=uploads, params=mini_params)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}/"
    srv.shutdown()
    thread.join(10)


def _clicked(element) -> bool:
    """Click, or False while another element still covers it (the page laying out a new index)."""
    from selenium.common.exceptions import ElementClickInterceptedException

    try:
        element.click()
    except ElementClickInterceptedException:
        return False
    return True


def test_page_of_every_method_in_chromium(browser, every_server, every_index, mini_params):
    """One server with an index of each method: the page loads, and for each index a box drawn on a
    thumbnail's image returns its results, a view of the same object first, and the re-ranking checkbox
    says what it does for that method."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(every_server)
    wait.until(lambda b: b.find_element(By.ID, "canvas").get_attribute("data-ready") == "1")
    options = [o.text for o in Select(browser.find_element(By.ID, "index")).options]
    assert options == [f"{ix.name} (15 images)" for ix in every_index]
    for i, ix in enumerate(every_index):
        Select(browser.find_element(By.ID, "index")).select_by_value(str(i))
        label = browser.find_element(By.ID, "rerank-label").get_attribute("title")
        assert label == ix.method.second_stage(mini_params[ix.method.name]), ix.name
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#database img")) == 15)
        wait.until(lambda b: _clicked(b.find_element(By.CSS_SELECTOR, "#database img[title=obj03_v0]")))
        wait.until(lambda b: b.find_element(By.ID, "query-name").text.startswith("obj03_v0 ")
                   and b.find_element(By.ID, "canvas").get_attribute("data-ready") == "1")
        canvas = browser.find_element(By.ID, "canvas")
        w, h = canvas.size["width"], canvas.size["height"]
        (ActionChains(browser).move_to_element_with_offset(canvas, round(-0.3 * w), round(-0.3 * h))
         .click_and_hold().move_by_offset(round(0.3 * w), round(0.3 * h)).move_by_offset(round(0.3 * w), round(0.3 * h))
         .release().perform())
        wait.until(lambda b: b.find_element(By.ID, "status").text.startswith("15 results"))
        first = browser.find_element(By.CSS_SELECTOR, "#results .card figcaption").text
        assert first.split(" · ")[-1].startswith("obj03_v"), (ix.name, first)  # a view of the object
        assert "error" not in browser.find_element(By.ID, "status").get_attribute("class"), ix.name
