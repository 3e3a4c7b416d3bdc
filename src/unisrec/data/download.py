"""`unisrec download`: fetch the public raw files that `unisrec prepare` reads.

- ``unisrec download amazon CATEGORY``: Amazon Reviews 2018 (Ni, Li & McAuley), the "ratings only"
  CSV ``categoryFilesSmall/<Category>.csv`` and ``metaFiles2/meta_<Category>.json.gz``.
- ``unisrec download online-retail``: the UCI Online Retail data set (CC BY 4.0), a zip holding
  ``Online Retail.xlsx``, which is extracted beside it.

Every file is written to ``NAME.part`` and renamed into place only when complete (and of the length
the server announced), so a finished name is never a truncated file. Re-running resumes a ``.part``
with an HTTP Range request when the server supports it, and skips files already present. Without
network access the command fails fast with the URLs to fetch by hand. Standard library only
(urllib), no extra dependency; ``--base-url`` (or ``UNISREC_DOWNLOAD_BASE_URL``) points it at a
mirror -- the tests use a local server on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import difflib
import http.client
import os
import shutil
import socket
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from unisrec.errors import UserError

AMAZON_BASE_URL = "https://mcauleylab.ucsd.edu/public_datasets/data/amazon_v2"
AMAZON_MIRRORS = (
    "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2",
    "https://jmcauley.ucsd.edu/data/amazon_v2",
)
ONLINE_RETAIL_BASE_URL = "https://archive.ics.uci.edu/static/public/352"
ONLINE_RETAIL_ZIP = "online+retail.zip"
ENV_BASE_URL = "UNISREC_DOWNLOAD_BASE_URL"
CHUNK = 1 << 20

# File stems of the Amazon 2018 categories ("5-core" and "ratings only" files share them).
AMAZON_CATEGORIES = (
    "AMAZON_FASHION", "All_Beauty", "Appliances", "Arts_Crafts_and_Sewing", "Automotive", "Books",
    "CDs_and_Vinyl", "Cell_Phones_and_Accessories", "Clothing_Shoes_and_Jewelry", "Digital_Music",
    "Electronics", "Gift_Cards", "Grocery_and_Gourmet_Food", "Home_and_Kitchen",
    "Industrial_and_Scientific", "Kindle_Store", "Luxury_Beauty", "Magazine_Subscriptions",
    "Movies_and_TV", "Musical_Instruments", "Office_Products", "Patio_Lawn_and_Garden",
    "Pet_Supplies", "Prime_Pantry", "Software", "Sports_and_Outdoors", "Tools_and_Home_Improvement",
    "Toys_and_Games", "Video_Games",
)
# The short names the UniSRec paper uses for its domains.
AMAZON_ALIASES = {
    "scientific": "Industrial_and_Scientific", "food": "Grocery_and_Gourmet_Food",
    "home": "Home_and_Kitchen", "cds": "CDs_and_Vinyl", "kindle": "Kindle_Store",
    "movies": "Movies_and_TV", "pantry": "Prime_Pantry", "instruments": "Musical_Instruments",
    "arts": "Arts_Crafts_and_Sewing", "office": "Office_Products", "games": "Video_Games",
    "fashion": "AMAZON_FASHION",
}


class DownloadError(UserError):
    """A file could not be fetched; the message gives the URL and what to do instead."""


def amazon_category(name: str) -> str:
    """Canonical file stem of an Amazon 2018 category: exact, case/space-insensitive or a paper alias."""
    key = name.strip().replace(" ", "_").replace(",", "").replace("&", "and").lower()
    by_key = {c.lower(): c for c in AMAZON_CATEGORIES}
    if key in by_key:
        return by_key[key]
    if key in AMAZON_ALIASES:
        return AMAZON_ALIASES[key]
    close = difflib.get_close_matches(key, list(by_key) + list(AMAZON_ALIASES), n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(by_key.get(c, c) for c in close)}?" if close else ""
    raise UserError(f"unknown Amazon 2018 category {name!r}.{hint} Known: {', '.join(AMAZON_CATEGORIES)}")


def amazon_urls(category: str, base_url: str = AMAZON_BASE_URL) -> dict[str, str]:
    """{local file name: URL} of one category's ratings CSV and metadata."""
    base = base_url.rstrip("/")
    return {
        f"{category}.csv": f"{base}/categoryFilesSmall/{category}.csv",
        f"meta_{category}.json.gz": f"{base}/metaFiles2/meta_{category}.json.gz",
    }


def download_file(url: str, dest: str | os.PathLike, timeout: float = 30.0, progress: bool = True) -> Path:
    """Fetch ``url`` to ``dest`` atomically (``dest.part`` then rename), resuming a previous ``.part``.

    An existing ``dest`` is kept as is (delete it to fetch again). Raises :class:`DownloadError`
    on an HTTP error, a network failure or a short read; the ``.part`` stays for the next try.
    """
    from tqdm import tqdm

    dest = Path(dest)
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "unisrec-download"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the .part already holds the whole file
            os.replace(part, dest)
            return dest
        raise DownloadError(f"{url} answered HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, socket.timeout, ConnectionError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DownloadError(f"cannot reach {url}: {reason}") from None
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0  # the server ignored the Range header: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        got = have
        bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, disable=not progress)
        try:
            with open(part, "ab" if resumed else "wb") as fh:
                while True:
                    chunk = response.read(CHUNK)
                    if not chunk:
                        break
                    fh.write(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
        except (OSError, socket.timeout, http.client.HTTPException) as exc:
            raise DownloadError(f"download of {url} broke off after {got} bytes ({exc}); run the command again to resume") from None
        finally:
            bar.close()
    if total is not None and got != total:
        raise DownloadError(f"download of {url} ended after {got} of {total} bytes; run the command again to resume")
    os.replace(part, dest)
    return dest


def _fetch_all(files: dict[str, str], out_dir: Path, timeout: float, manual_hint: str) -> list[Path]:
    paths = []
    for name, url in files.items():
        print(f"  {url}\n    -> {out_dir / name}", flush=True)
        try:
            paths.append(download_file(url, out_dir / name, timeout=timeout))
        except DownloadError as exc:
            listing = "\n".join(f"  {u}  ->  {out_dir / n}" for n, u in files.items())
            raise DownloadError(
                f"{exc}\nThis machine may have no internet access (or the server moved). Fetch the files "
                f"with a browser or another machine and place them as follows:\n{listing}\n{manual_hint}"
            ) from None
    return paths


def download_amazon(category: str, output: str | os.PathLike | None = None, base_url: str | None = None, timeout: float = 30.0) -> dict[str, Path]:
    """Download one Amazon 2018 category; returns {"ratings": path, "meta": path}."""
    category = amazon_category(category)
    base = base_url or os.environ.get(ENV_BASE_URL) or AMAZON_BASE_URL
    out_dir = Path(output) if output else Path("data") / "raw" / "amazon" / category
    files = amazon_urls(category, base)
    mirrors = "Mirrors of the same files: " + ", ".join(AMAZON_MIRRORS) + " (pass one with --base-url)."
    ratings, meta = _fetch_all(files, out_dir, timeout, mirrors)
    return {"ratings": ratings, "meta": meta}


def download_online_retail(output: str | os.PathLike | None = None, base_url: str | None = None, timeout: float = 30.0) -> Path:
    """Download the UCI Online Retail zip and extract ``Online Retail.xlsx``; returns the .xlsx path."""
    base = (base_url or os.environ.get(ENV_BASE_URL) or ONLINE_RETAIL_BASE_URL).rstrip("/")
    out_dir = Path(output) if output else Path("data") / "raw" / "online_retail"
    xlsx = out_dir / "Online Retail.xlsx"
    if xlsx.is_file():
        return xlsx
    hint = ("The data set's page is https://archive.ics.uci.edu/dataset/352/online+retail; the Kaggle copy "
            "(data.csv, latin-1) works too: `unisrec prepare online-retail --input data.csv`.")
    (archive,) = _fetch_all({ONLINE_RETAIL_ZIP: f"{base}/{ONLINE_RETAIL_ZIP}"}, out_dir, timeout, hint)
    try:
        with zipfile.ZipFile(archive) as zf:
            member = next((m for m in zf.namelist() if m.lower().endswith(".xlsx")), None)
            if member is None:
                raise DownloadError(f"{archive} holds no .xlsx file (it has: {', '.join(zf.namelist())})")
            tmp = xlsx.with_name(xlsx.name + ".part")
            with zf.open(member) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            os.replace(tmp, xlsx)
    except zipfile.BadZipFile:
        raise DownloadError(f"{archive} is not a valid zip file; delete it and run the command again") from None
    return xlsx


# ----------------------------------------------------------------------------- CLI
def register(subparsers) -> None:
    p = subparsers.add_parser(
        "download",
        help="fetch public raw data (Amazon 2018 categories, UCI Online Retail)",
        description="Download the public raw files that `unisrec prepare` reads. Files are written atomically "
        "(NAME.part, then renamed) and an interrupted download resumes when re-run.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  unisrec download amazon Industrial_and_Scientific      (or the paper's short name: Scientific)\n"
        "  unisrec download online-retail --output data/raw/online_retail\n"
        f"Without network access the command stops at once and lists the URLs to fetch by hand.\n"
        f"Mirror: --base-url URL or the {ENV_BASE_URL} environment variable.",
    )
    src = p.add_subparsers(dest="source", metavar="SOURCE", required=True)

    a = src.add_parser("amazon", help="Amazon Reviews 2018 ratings-only CSV + meta_<Category>.json.gz")
    a.add_argument("category", help="category file stem, e.g. Industrial_and_Scientific, Video_Games (or Scientific, Games)")
    _options(a, AMAZON_BASE_URL, "data/raw/amazon/CATEGORY")
    a.set_defaults(func=_download_amazon)

    r = src.add_parser("online-retail", help="UCI Online Retail (zip with Online Retail.xlsx)")
    _options(r, ONLINE_RETAIL_BASE_URL, "data/raw/online_retail")
    r.set_defaults(func=_download_online_retail)


def _options(p: argparse.ArgumentParser, base: str, default_out: str) -> None:
    p.add_argument("--output", "-o", metavar="DIR", help=f"folder for the files (default {default_out})")
    p.add_argument("--base-url", metavar="URL", help=f"server to fetch from (default {base}, or ${ENV_BASE_URL})")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="network timeout in seconds (default %(default)s)")


def _download_amazon(args: argparse.Namespace) -> int:
    paths = download_amazon(args.category, args.output, args.base_url, args.timeout)
    name = amazon_category(args.category).lower()
    print(f"done. Next:\n  unisrec prepare amazon --ratings '{paths['ratings']}' --meta '{paths['meta']}' --output data/{name}")
    return 0


def _download_online_retail(args: argparse.Namespace) -> int:
    xlsx = download_online_retail(args.output, args.base_url, args.timeout)
    print(f"done. Next:\n  unisrec prepare online-retail --input '{xlsx}' --output data/online_retail")
    return 0
