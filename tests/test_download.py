"""`unisrec download` against a real HTTP server on 127.0.0.1 (never a non-loopback address)."""

import gzip
import http.server
import io
import socket
import threading
import zipfile
from functools import partial

import pytest

from unisrec.cli import main
from unisrec.data.download import DownloadError, amazon_category, download_amazon, download_file, download_online_retail
from unisrec.errors import UserError


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (for resume) and a switch to break off mid-file."""

    cut_after: int | None = None  # bytes to send before dropping the connection (None = all)
    range_requests: list = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        try:
            data = open(path, "rb").read()
        except OSError:
            self.send_error(404, "Not Found")
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            type(self).range_requests.append(rng)
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut_after is not None:
            self.wfile.write(body[: self.cut_after])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    (root / "categoryFilesSmall").mkdir(parents=True)
    (root / "metaFiles2").mkdir()
    RangeHandler.cut_after = None
    RangeHandler.range_requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def amazon_files(root):
    ratings = b"".join(b"I%03d,U%03d,5.0,%d\n" % (i % 7, i, 1500000000 + i) for i in range(300))
    meta = gzip.compress(b'{"asin": "I001", "title": "A thing"}\n')
    (root / "categoryFilesSmall" / "Industrial_and_Scientific.csv").write_bytes(ratings)
    (root / "metaFiles2" / "meta_Industrial_and_Scientific.json.gz").write_bytes(meta)
    return ratings, meta


def test_amazon_download_end_to_end(server, tmp_path):
    root, url = server
    ratings, meta = amazon_files(root)
    out = tmp_path / "raw"
    paths = download_amazon("Scientific", out, base_url=url)  # the paper's short name
    assert paths["ratings"] == out / "Industrial_and_Scientific.csv"
    assert paths["ratings"].read_bytes() == ratings
    assert paths["meta"].read_bytes() == meta
    assert not list(out.glob("*.part"))  # temp files renamed into place


def test_cli_download_prints_next_command(server, tmp_path, capsys):
    root, url = server
    amazon_files(root)
    assert main(["download", "amazon", "industrial and scientific", "--output", str(tmp_path / "o"), "--base-url", url]) == 0
    assert "unisrec prepare amazon --ratings" in capsys.readouterr().out


def test_broken_transfer_keeps_part_and_resumes(server, tmp_path):
    root, url = server
    ratings, _ = amazon_files(root)
    dest = tmp_path / "r.csv"
    RangeHandler.cut_after = 1000
    with pytest.raises(DownloadError, match="run the command again to resume"):
        download_file(f"{url}/categoryFilesSmall/Industrial_and_Scientific.csv", dest, progress=False)
    assert not dest.exists()  # never a truncated file under the final name
    assert (tmp_path / "r.csv.part").stat().st_size == 1000
    RangeHandler.cut_after = None
    download_file(f"{url}/categoryFilesSmall/Industrial_and_Scientific.csv", dest, progress=False)
    assert RangeHandler.range_requests == ["bytes=1000-"]
    assert dest.read_bytes() == ratings
    assert not (tmp_path / "r.csv.part").exists()


def test_404_names_url_and_lists_files(server, tmp_path):
    _, url = server  # nothing served
    with pytest.raises(DownloadError) as err:
        download_amazon("Video_Games", tmp_path / "o", base_url=url)
    msg = str(err.value)
    assert "HTTP 404" in msg
    assert f"{url}/categoryFilesSmall/Video_Games.csv" in msg
    assert f"{url}/metaFiles2/meta_Video_Games.json.gz" in msg
    assert not (tmp_path / "o" / "Video_Games.csv").exists()


def test_connection_refused_fails_fast_with_urls(tmp_path, capsys):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["download", "online-retail", "--output", str(tmp_path), "--base-url", f"http://127.0.0.1:{port}", "--timeout", "5"])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot reach" in err and f"http://127.0.0.1:{port}/online+retail.zip" in err
    assert "Traceback" not in err


def test_online_retail_zip_is_extracted(server, tmp_path):
    root, url = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("Online Retail.xlsx", b"PK fake xlsx bytes")
    (root / "online+retail.zip").write_bytes(buf.getvalue())
    xlsx = download_online_retail(tmp_path / "or", base_url=url)
    assert xlsx.name == "Online Retail.xlsx" and xlsx.read_bytes() == b"PK fake xlsx bytes"


def test_category_names():
    assert amazon_category("Video Games") == "Video_Games"
    assert amazon_category("pantry") == "Prime_Pantry"
    with pytest.raises(UserError, match="Did you mean: Video_Games"):
        amazon_category("Video_Gams")
