"""A small labelled skill corpus for ranking-quality tests and the search benchmark.

Kept in the package (not tests/) because bench/skill_search.py builds its
10,000-skill library from these templates too.
"""

from __future__ import annotations

# (name, description, source body hint)
SKILLS: tuple[tuple[str, str, str], ...] = (
    ("fetch_json", "Fetch JSON from URL", "import json, urllib.request\nasync def run(url: str):\n    with urllib.request.urlopen(url) as r:\n        return json.load(r)\n"),
    ("file_checksum", "Compute file checksum", "import hashlib\nasync def run(path: str):\n    return hashlib.sha256(open(path, 'rb').read()).hexdigest()\n"),
    ("csv_to_rows", "Parse a CSV file into a list of rows", "import csv\nasync def run(path: str):\n    with open(path) as f:\n        return list(csv.reader(f))\n"),
    ("send_email", "Send an email message via SMTP", "import smtplib\nasync def run(to: str, subject: str, body: str):\n    smtplib.SMTP('localhost').sendmail('me', [to], body)\n"),
    ("resize_image", "Resize a picture to a given width", "from PIL import Image\nasync def run(path: str, width: int):\n    img = Image.open(path)\n    return img.resize((width, width))\n"),
    ("word_count", "Count the words in a text", "async def run(text: str):\n    return len(text.split())\n"),
    ("sort_numbers", "Sort a list of numbers in ascending order", "async def run(items: list):\n    return sorted(items)\n"),
    ("parse_date", "Parse an ISO date string into a datetime", "import datetime\nasync def run(s: str):\n    return datetime.datetime.fromisoformat(s)\n"),
    ("post_json", "Upload a JSON payload to an HTTP endpoint", "import json, urllib.request\nasync def run(url: str, payload: dict):\n    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method='POST')\n    return urllib.request.urlopen(req).status\n"),
    ("delete_old_files", "Remove files older than N days from a directory", "import os, time\nasync def run(folder: str, days: int = 7):\n    for f in os.listdir(folder):\n        pass\n"),
    ("sum_column", "Compute the total of a column in a table", "async def run(rows: list, column: int):\n    return sum(float(r[column]) for r in rows)\n"),
    ("save_text", "Write text to a file on disk", "async def run(path: str, text: str):\n    open(path, 'w').write(text)\n"),
)

# (query, the skill that must rank above `worse`, worse)
LABELLED: tuple[tuple[str, str, str], ...] = (
    ("download data from an api", "fetch_json", "file_checksum"),
    ("hash a file", "file_checksum", "fetch_json"),
    ("read a spreadsheet", "csv_to_rows", "send_email"),
    ("mail a report", "send_email", "csv_to_rows"),
    ("make a photo smaller", "resize_image", "word_count"),
    ("how many words", "word_count", "sort_numbers"),
    ("order values", "sort_numbers", "word_count"),
    ("send data to a web service", "post_json", "file_checksum"),
    ("clean up old files in a folder", "delete_old_files", "fetch_json"),
    ("add up the amounts in a table column", "sum_column", "parse_date"),
    ("parse a timestamp", "parse_date", "sum_column"),
    ("persist a string to disk", "save_text", "fetch_json"),
)
