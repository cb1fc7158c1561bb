"""Deterministic synthetic tweets in the X API v2 filtered-stream format.

The live X API costs money and needs credentials, and a workshop needs every reader to see the
same numbers; so the tutorial replays a synthetic stream instead. It is shaped like the real
one where that matters to the architecture: heavy-tailed follower and engagement counts, a few
hundred messy free-text locations, a daily traffic rhythm, and the faults a real stream has
(duplicate deliveries, late tweets, malformed lines) so the layers have something to get
right. Everything comes from one ``random.Random(seed)``: the same arguments give the same
bytes, and tweets are produced one at a time so a million of them never sit in memory.
"""

from __future__ import annotations

import bisect
import copy
import gzip
import heapq
import itertools
import json
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from lambda_demo.contract import MAX_COUNT

logger = logging.getLogger(__name__)

DEFAULT_START = datetime(2026, 11, 1, tzinfo=UTC)
DUPLICATE_RATE = 0.005  # a tweet delivered twice, 1-9 minutes apart (stream reconnects)
MALFORMED_RATE = 0.003  # an extra line that breaks the contract
LATE_RATE = 0.02  # a tweet delivered after later ones, by up to MAX_LATENESS_MS
MAX_LATENESS_MS = 10 * 60 * 1000
USERS = 4000

_TWITTER_EPOCH_MS = 1288834974657  # snowflake ids count milliseconds from here
_SNOWFLAKE_LIMIT_MS = _TWITTER_EPOCH_MS + 2**41  # past this, ids no longer fit 63 bits (2080)
_MS_PER_HOUR = 3_600_000
# Relative traffic per UTC hour: busy evenings, quiet small hours.
_HOURLY_WEIGHTS = (
    1.0, 0.8, 0.6, 0.45, 0.35, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85,
    0.9, 0.95, 1.0, 1.05, 1.15, 1.3, 1.5, 1.7, 1.8, 1.7, 1.5, 1.25,
)  # fmt: skip

_CITIES = (
    ("London", "UK"), ("New York", "NY"), ("Los Angeles", "CA"), ("Paris", "France"),
    ("Tokyo", "Japan"), ("São Paulo", "Brasil"), ("Lagos", "Nigeria"), ("Madrid", "España"),
    ("Berlin", "Deutschland"), ("Chicago", "IL"), ("Toronto", "Canada"), ("Mumbai", "India"),
    ("México", "CDMX"), ("Buenos Aires", "Argentina"), ("Sydney", "Australia"),
    ("東京", "日本"), ("Москва", "Россия"), ("Istanbul", "Türkiye"), ("Seoul", "Korea"),
    ("Jakarta", "Indonesia"), ("Manila", "Philippines"), ("Nairobi", "Kenya"),
    ("Johannesburg", "South Africa"), ("Cairo", "Egypt"), ("Dubai", "UAE"),
    ("Barcelona", "Catalunya"), ("Rome", "Italia"), ("Milano", "Italia"), ("Lisboa", "Portugal"),
    ("Amsterdam", "Nederland"), ("Bruxelles", "Belgique"), ("Zürich", "Schweiz"),
    ("Wien", "Österreich"), ("München", "Bayern"), ("Hamburg", "Deutschland"),
    ("Kraków", "Polska"), ("Warszawa", "Polska"), ("Praha", "Česko"), ("Stockholm", "Sverige"),
    ("Oslo", "Norge"), ("København", "Danmark"), ("Helsinki", "Suomi"), ("Dublin", "Ireland"),
    ("Manchester", "England"), ("Glasgow", "Scotland"), ("Austin", "TX"), ("Seattle", "WA"),
    ("San Francisco", "CA"), ("Boston", "MA"), ("Miami", "FL"), ("Atlanta", "GA"),
    ("Denver", "CO"), ("Montréal", "Québec"), ("Vancouver", "BC"), ("Bogotá", "Colombia"),
    ("Lima", "Perú"), ("Santiago", "Chile"), ("Caracas", "Venezuela"), ("Quito", "Ecuador"),
    ("Rio de Janeiro", "Brasil"), ("Belo Horizonte", "MG"), ("Porto Alegre", "RS"),
    ("Guadalajara", "Jalisco"), ("Monterrey", "NL"), ("大阪", "日本"), ("Osaka", "Japan"),
    ("서울", "대한민국"), ("北京", "中国"), ("上海", "中国"), ("Singapore", "SG"),
    ("Bangkok", "Thailand"), ("Hà Nội", "Việt Nam"), ("Kuala Lumpur", "Malaysia"),
    ("Delhi", "India"), ("Bengaluru", "India"), ("Karachi", "Pakistan"), ("Dhaka", "Bangladesh"),
    ("Tehran", "Iran"), ("الرياض", "السعودية"), ("القاهرة", "مصر"), ("Tel Aviv", "Israel"),
    ("Athína", "Ελλάδα"), ("Αθήνα", "Ελλάδα"), ("Kyiv", "Ukraine"), ("Bucureşti", "România"),
    ("Budapest", "Magyarország"), ("Accra", "Ghana"), ("Dakar", "Sénégal"),
    ("Casablanca", "Maroc"), ("Tunis", "Tunisie"), ("Addis Ababa", "Ethiopia"),
    ("Auckland", "New Zealand"), ("Melbourne", "VIC"), ("Honolulu", "HI"), ("Reykjavík", "Ísland"),
)  # fmt: skip
# Free text as people really fill it in: jokes, emoji, and the characters that break naive
# CSV or SQL handling (';', '"', ',', newlines, tabs).
_ODD_LOCATIONS = (
    "Earth", "Planet Earth 🌍", "🌍", "everywhere", "worldwide", "Internet", "127.0.0.1",
    "she/her", "he/him", "they/them", "Hogwarts", "Gotham City", "Middle-earth", "the moon 🌙",
    "in my head", "somewhere over the rainbow 🌈", "NYC 🗽", "LA ☀️", "🇧🇷", "🇫🇷 Paris",
    "🇯🇵", "Texas 🤠", "Florida 🌴", "Cali 🌊", "🏳️‍🌈 Berlin", "東京都 渋谷区", "とうきょう",
    "Lisboa ☕", "Madrid 💃", "Wakanda ✊🏿", "home", "my couch", "Springfield", "The Shire",
    "Paris; France", "Berlin; Germany", "Austin; TX", "London;UK", 'The "Big Apple"',
    '"Paris"', 'Sydney "Harbour City"', "Portland, OR, USA", "Cape Town, Western Cape, SA",
    "Line one\nLine two", "Berlin\nGermany", "Toronto\nON\nCanada", "Tab\tSeparated",
    "São Paulo\n🇧🇷", "null", "NULL", "None", "N/A", "-", ".", "?", "🤷",
    "Zürich, Schweiz; Genève, Suisse", "a,b;c\"d", "C:\\Users", "<b>bold</b>",
    "Ciudad de México 🇲🇽", "Montréal, QC 🍁", "Rio 🏖️", "København 🚲", "İzmir", "Øresund",
    "Ålesund", "Łódź", "Ñuñoa", "Cluj-Napoca", "Saint-Étienne", "Köln", "Düsseldorf",
    "Baile Átha Cliath", "Caerdydd", "Wrocław", "Kraków 🐉", "Plovdiv", "Tbilisi", "Yerevan",
    "Almaty", "Tashkent", "Ulaanbaatar", "Kathmandu", "Colombo", "Chennai", "Hyderabad",
    "Pune", "Kolkata", "Lahore", "Islamabad", "Doha", "Kuwait", "Muscat", "Amman", "Beirut",
    "Baghdad", "Kampala", "Kigali", "Lusaka", "Harare", "Luanda", "Maputo", "Abidjan",
    "Kinshasa", "Douala", "Windhoek", "Gaborone", "Antananarivo", "Port Louis", "Suva",
    "Havana", "San Juan, PR", "Panamá", "San José, CR", "Managua", "Tegucigalpa",
)  # fmt: skip
_WHITESPACE = (" ", "  ", "\t", "\n", " \u00a0", "\u3000", "\r\n")
_LANGS = ("en", "es", "ja", "pt", "fr", "de", "ar", "tr", "ko", "it", "und")
_LANG_WEIGHTS = (46, 15, 10, 8, 6, 5, 3, 2, 2, 2, 1)
_SENTENCES = {  # split into words below
    "en": "the data stream is late again today what a game love this new album can't wait "
    "for tonight just shipped it why does kafka lag so much coffee first",
    "es": "hoy el partido fue increíble qué buena noticia mañana vamos con todo gracias a "
    "todos no puedo más café primero la música",
    "ja": "今日 は とても 楽しい 試合 でした ありがとう 明日 も 頑張ります コーヒー 新曲",
    "pt": "hoje o jogo foi incrível que notícia boa amanhã vamos obrigado a todos não "
    "aguento mais café primeiro",
    "fr": "aujourd'hui le match était incroyable quelle bonne nouvelle demain on y va merci "
    "à tous je n'en peux plus café d'abord",
    "de": "heute war das Spiel unglaublich was für eine gute Nachricht morgen geht's weiter "
    "danke an alle Kaffee zuerst",
    "ar": "اليوم كانت المباراة رائعة شكرا للجميع غدا نبدأ من جديد القهوة أولا",
    "tr": "bugün maç harikaydı herkese teşekkürler yarın yeniden başlıyoruz önce kahve",
    "ko": "오늘 경기 정말 좋았어요 모두 감사합니다 내일 다시 시작 커피 먼저",
    "it": "oggi la partita è stata incredibile grazie a tutti domani si riparte prima il caffè",
    "und": "lol ok 😂 🔥🔥 !!! ??? 👀 ... +1 gg",
}
_WORDS = {lang: sentence.split() for lang, sentence in _SENTENCES.items()}
_HASHTAGS = (
    "DataEngineering", "Kafka", "ApacheSpark", "BigData", "LambdaArchitecture", "AI", "Python",
    "WorldCup", "NBA", "Music", "NowPlaying", "Election", "Climate", "Tech", "OpenSource",
    "SQL", "Streaming", "fútbol", "café", "東京", "Mundial", "BBB26", "F1", "Cricket",
    "GameDay", "MondayMotivation", "FridayFeeling", "TBT", "100DaysOfCode", "DevOps", "Cloud",
    "ML", "Art", "Photography", "Travel", "Food", "Fitness", "Crypto", "Startups", "News",
)  # fmt: skip
_EMOJI = ("😂", "🔥", "❤️", "👍", "🙏", "🎉", "😭", "🚀", "⚽", "🎶", "👨‍👩‍👧", "🏳️‍🌈")
_FIRST_NAMES = (
    "Ana", "José", "Zoë", "Liam", "Olivia", "Noah", "Chloé", "Søren", "Björk", "Siobhán",
    "Mateo", "Lucía", "Yuki", "太郎", "花子", "Анна", "Иван", "محمد", "فاطمة", "Ayşe", "Mehmet",
    "민준", "서연", "Priya", "Arjun", "Chidi", "Amara", "Kwame", "Léa", "Lukas", "Giulia",
)  # fmt: skip
_LAST_NAMES = (
    "Silva", "García", "Müller", "Dubois", "Smith", "O'Brien", "Nguyễn", "Kowalski", "Rossi",
    "Yılmaz", "Kim", "Sato", "Иванов", "Okafor", "Mensah", "Patel", "Johansson", "",
)  # fmt: skip
_RULES = (
    {"id": "1850000000000000001", "tag": "data engineering"},
    {"id": "1850000000000000002", "tag": "sports"},
    {"id": "1850000000000000003", "tag": "music"},
    {"id": "1850000000000000004", "tag": "everything else"},
)
_MALFORMED_KINDS = (
    "truncated",
    "not_object",
    "missing_data",
    "bad_id",
    "float_like_count",
    "string_retweet_count",
    "bool_followers_count",
    "bad_created_at",
    "author_not_in_includes",
    "invalid_utf8",
    "nul_byte",
)


@dataclass(frozen=True)
class _User:
    """An author: the same id always has the same location and follower count."""

    id: str
    lang: str
    followers: int
    payload: dict[str, Any]  # the ``includes.users`` object, built once and reused


@dataclass(frozen=True)
class _World:
    """Everything drawn once per seed before the first tweet."""

    users: tuple[_User, ...]
    user_cum_weights: tuple[float, ...]  # heavy-tailed activity: a few users tweet a lot
    hashtag_cum_weights: tuple[float, ...]


def generate(
    *, tweets: int, days: int, seed: int, start: datetime = DEFAULT_START
) -> Iterator[bytes]:
    """Yield the stream's lines (no trailing newline) in delivery order.

    ``tweets`` distinct valid tweets are created in ``[start, start + days)``; duplicate
    deliveries and malformed lines come on top, so there are slightly more lines than tweets.
    """
    for _kind, line in _deliveries(tweets=tweets, days=days, seed=seed, start=start):
        yield line


def write(
    path: Path, *, tweets: int, days: int, seed: int, start: datetime = DEFAULT_START
) -> dict[str, int]:
    """Write the stream to ``path`` (gzip if it ends in ``.gz``) and return the line counts.

    Gzip with ``mtime=0`` and no file name in the header, so the file is byte-identical for
    the same arguments and can be committed. The file appears atomically: a crash leaves no
    half-written sample behind.
    """
    path = Path(path)
    counts = {"lines": 0, "tweets": 0, "duplicates": 0, "malformed": 0}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as raw_file, _open_output(raw_file, gz=path.suffix == ".gz") as out:
            batch: list[bytes] = []
            for kind, line in _deliveries(tweets=tweets, days=days, seed=seed, start=start):
                counts[kind] += 1
                batch.append(line)
                if len(batch) >= 4096:
                    out.write(b"\n".join(batch) + b"\n")
                    batch.clear()
            if batch:
                out.write(b"\n".join(batch) + b"\n")
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    counts["lines"] = counts["tweets"] + counts["duplicates"] + counts["malformed"]
    logger.info("wrote %s: %s", path, counts)
    return counts


def _open_output(raw_file: BinaryIO, *, gz: bool) -> BinaryIO:
    if not gz:
        return raw_file
    return gzip.GzipFile(filename="", mode="wb", fileobj=raw_file, mtime=0, compresslevel=6)


def _deliveries(
    *, tweets: int, days: int, seed: int, start: datetime
) -> Iterator[tuple[str, bytes]]:
    """(kind, line) in delivery order; kind is "tweets", "duplicates" or "malformed".

    Tweets are created in time order; late tweets and duplicates wait in a heap keyed by
    delivery time and are released once the creation clock passes them, so only the last
    ten minutes of the stream are ever held in memory.
    """
    start_ms = _check_arguments(tweets=tweets, days=days, start=start)
    rng = random.Random(seed)
    world = _build_world(rng)
    pending: list[tuple[int, int, str, bytes]] = []
    order = itertools.count()
    last_id = 0
    for created_ms in _creation_times(rng, tweets=tweets, days=days, start_ms=start_ms):
        while pending and pending[0][0] <= created_ms:
            _, _, kind, line = heapq.heappop(pending)
            yield kind, line
        if rng.random() < MALFORMED_RATE:
            last_id = _next_id(rng, created_ms, last_id)
            yield "malformed", _malformed(rng, _payload(rng, world, created_ms, last_id))
        last_id = _next_id(rng, created_ms, last_id)
        line = _encode(_payload(rng, world, created_ms, last_id))
        delivered_ms = created_ms
        if rng.random() < LATE_RATE:
            delivered_ms += rng.randint(5_000, MAX_LATENESS_MS)
            heapq.heappush(pending, (delivered_ms, next(order), "tweets", line))
        else:
            yield "tweets", line
        if rng.random() < DUPLICATE_RATE:
            again_ms = delivered_ms + rng.randint(60_000, 9 * 60_000)
            heapq.heappush(pending, (again_ms, next(order), "duplicates", line))
    while pending:
        _, _, kind, line = heapq.heappop(pending)
        yield kind, line


def _check_arguments(*, tweets: int, days: int, start: datetime) -> int:
    if tweets < 0 or days < 1:
        raise ValueError(f"need tweets >= 0 and days >= 1, got tweets={tweets} days={days}")
    if start.tzinfo is None:
        raise ValueError(f"start must be timezone-aware, got {start!r}")
    start_ms = round(start.timestamp() * 1000)
    if start_ms + days * 24 * _MS_PER_HOUR > _SNOWFLAKE_LIMIT_MS:
        raise ValueError("the sample must end before 2080, when tweet ids outgrow 63 bits")
    return start_ms


def _creation_times(rng: random.Random, *, tweets: int, days: int, start_ms: int) -> Iterator[int]:
    """Exactly ``tweets`` sorted creation times (epoch ms) following the daily rhythm.

    Sorted uniforms are drawn one at a time (each is the minimum of the uniforms still to
    come), then mapped through the inverse of the hourly traffic distribution; this keeps
    the stream in time order without holding all timestamps in memory.
    """
    first_hour = start_ms // _MS_PER_HOUR
    weights = [_HOURLY_WEIGHTS[(first_hour + h) % 24] for h in range(days * 24)]
    cum = list(itertools.accumulate(weights, initial=0.0))
    end_ms = start_ms + days * 24 * _MS_PER_HOUR
    position = 0.0
    for remaining in range(tweets, 0, -1):
        position = 1.0 - (1.0 - position) * (1.0 - rng.random()) ** (1.0 / remaining)
        target = position * cum[-1]
        hour = min(bisect.bisect_right(cum, target) - 1, len(weights) - 1)
        within = (target - cum[hour]) / weights[hour]
        yield min(start_ms + int((hour + within) * _MS_PER_HOUR), end_ms - 1)


def _next_id(rng: random.Random, created_ms: int, last_id: int) -> int:
    """A snowflake-like id: milliseconds since the Twitter epoch, then worker and sequence."""
    snowflake = (max(created_ms - _TWITTER_EPOCH_MS, 0) << 22) | rng.getrandbits(22)
    return max(snowflake, last_id + 1)


def _build_world(rng: random.Random) -> _World:
    pool = _location_pool()
    location_cum = list(itertools.accumulate(1.0 / (rank + 1) ** 0.85 for rank in range(len(pool))))
    seen_ids: set[str] = set()
    users = []
    for _ in range(USERS):
        user_id = _user_id(rng)
        while user_id in seen_ids:
            user_id = _user_id(rng)
        seen_ids.add(user_id)
        users.append(_make_user(rng, user_id, rng.choices(pool, cum_weights=location_cum)[0]))
    activity = itertools.accumulate(min(rng.paretovariate(1.5), 60.0) for _ in range(USERS))
    tag_cum = itertools.accumulate(1.0 / (rank + 1) for rank in range(len(_HASHTAGS)))
    return _World(tuple(users), tuple(activity), tuple(tag_cum))


def _location_pool() -> list[str]:
    """About 300 distinct locations in rough popularity order (cities first, oddities later)."""
    plain = [city for city, _ in _CITIES]
    qualified = [f"{city}, {region}" for city, region in _CITIES]
    mixed = itertools.chain.from_iterable(itertools.zip_longest(plain, qualified, _ODD_LOCATIONS))
    return [location for location in mixed if location is not None]


def _user_id(rng: random.Random) -> str:
    if rng.random() < 0.4:  # accounts from before 2013 have short sequential ids
        return str(rng.randrange(10**5, 10**10))
    return str(rng.randrange(10**17, 2 * 10**18))


def _make_user(rng: random.Random, user_id: str, pooled_location: str) -> _User:
    first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
    payload: dict[str, Any] = {
        "id": user_id,
        "name": f"{first} {last}".strip(),
        "username": f"user_{user_id[-6:]}{rng.randrange(100)}",
    }
    roll = rng.random()
    if roll < 0.07:
        pass  # no "location" key: the API omits fields the user never set
    elif roll < 0.11:
        payload["location"] = None
    elif roll < 0.13:
        payload["location"] = ""
    elif roll < 0.15:
        payload["location"] = rng.choice(_WHITESPACE)
    elif roll < 0.20:
        payload["location"] = rng.choice(_WHITESPACE) + pooled_location + rng.choice(_WHITESPACE)
    else:
        payload["location"] = pooled_location
    followers = _followers(rng)
    payload["public_metrics"] = {
        "followers_count": followers,
        "following_count": int(rng.lognormvariate(5.0, 1.3)),
        "tweet_count": int(rng.lognormvariate(7.0, 2.0)),
        "listed_count": int(followers * rng.random() * 0.01),
    }
    lang = rng.choices(_LANGS, weights=_LANG_WEIGHTS)[0]
    return _User(id=user_id, lang=lang, followers=followers, payload=payload)


def _followers(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.04:
        return 0
    if roll < 0.045:  # celebrities: a few accounts in the millions
        return min(int(1_000_000 * rng.paretovariate(1.0)), 250_000_000)
    return int(rng.lognormvariate(5.0, 2.0))


def _payload(rng: random.Random, world: _World, created_ms: int, tweet_id: int) -> dict[str, Any]:
    user = rng.choices(world.users, cum_weights=world.user_cum_weights)[0]
    lang = user.lang if rng.random() < 0.9 else rng.choice(_LANGS)
    text, hashtags = _text(rng, world, lang)
    likes = 0 if rng.random() < 0.6 else int(rng.paretovariate(1.2) * (user.followers + 1) ** 0.35)
    retweets = (
        0 if rng.random() < 0.8 else int(rng.paretovariate(1.4) * (user.followers + 1) ** 0.25)
    )
    data: dict[str, Any] = {
        "author_id": user.id,
        "created_at": _timestamp(created_ms),
        "edit_history_tweet_ids": [str(tweet_id)],
        "id": str(tweet_id),
        "lang": lang,
        "public_metrics": {
            "retweet_count": min(retweets, MAX_COUNT),
            "reply_count": 0 if rng.random() < 0.85 else int(rng.paretovariate(1.5)),
            "like_count": min(likes, MAX_COUNT),
            "quote_count": 0 if rng.random() < 0.95 else int(rng.paretovariate(2.0)),
        },
        "text": text,
    }
    if hashtags:  # like the API, no "entities" when there is nothing to report
        data["entities"] = {"hashtags": hashtags}
    return {
        "data": data,
        "includes": {"users": [user.payload]},
        "matching_rules": [rng.choice(_RULES)],
    }


def _text(rng: random.Random, world: _World, lang: str) -> tuple[str, list[dict[str, Any]]]:
    words = rng.choices(_WORDS[lang], k=rng.randint(3, 14))
    text = ("\n" if rng.random() < 0.03 else " ").join(words)
    if rng.random() < 0.15:
        text += " " + rng.choice(_EMOJI)
    hashtags = []
    for tag in rng.choices(_HASHTAGS, cum_weights=world.hashtag_cum_weights, k=_hashtag_count(rng)):
        begin = len(text) + 1
        text += f" #{tag}"
        hashtags.append({"start": begin, "end": begin + 1 + len(tag), "tag": tag})
    if rng.random() < 0.1:
        text += " https://t.co/" + "".join(
            rng.choices("abcdefghijkmnopqrstuvwxyzABCDEFGH0123456789", k=10)
        )
    return text, hashtags


def _hashtag_count(rng: random.Random) -> int:
    roll = rng.random()
    return 0 if roll < 0.55 else 1 if roll < 0.85 else 2 if roll < 0.96 else 3


def _timestamp(epoch_ms: int) -> str:
    """Whole seconds with ".000", as the API writes ``created_at``."""
    moment = datetime.fromtimestamp(epoch_ms // 1000, tz=UTC)
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}.000Z"
    )


def _encode(payload: object) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _malformed(rng: random.Random, payload: dict[str, Any]) -> bytes:
    """A line that breaks the contract in one of several ways real streams and bugs produce."""
    payload = copy.deepcopy(payload)  # the user object is shared with valid tweets
    data, user = payload["data"], payload["includes"]["users"][0]
    kind = rng.choice(_MALFORMED_KINDS)
    if kind == "truncated":  # a connection dropped mid-line
        text = _encode(payload).decode("utf-8")
        return text[: rng.randint(1, len(text) - 1)].encode("utf-8")
    if kind == "not_object":
        return rng.choice((b"[]", b'"keep-alive"', b"null", b"42", _encode([payload])))
    if kind == "missing_data":
        if rng.random() < 0.5:  # what the API sends instead of a tweet when it disconnects
            return _encode({"errors": [{"title": "operational-disconnect", "type": "about:blank"}]})
        del payload["data"]
    elif kind == "bad_id":
        tweet_id = data["id"]
        data["id"] = rng.choice((tweet_id + "x", "", "-" + tweet_id, "١٢٣٤٥", int(tweet_id), None))
    elif kind == "float_like_count":
        data["public_metrics"]["like_count"] = float(data["public_metrics"]["like_count"])
    elif kind == "string_retweet_count":
        data["public_metrics"]["retweet_count"] = str(data["public_metrics"]["retweet_count"])
    elif kind == "bool_followers_count":
        user["public_metrics"]["followers_count"] = rng.random() < 0.5
    elif kind == "bad_created_at":
        good = data["created_at"]
        data["created_at"] = rng.choice(
            (
                good.replace("T", " ").removesuffix(".000Z"),
                good.replace(".000Z", ".000+02:00"),
                good[:5] + "13" + good[7:],  # month 13
                "Sun Nov 01 20:15:00 +0000 2026",  # the old v1.1 format
                "yesterday",
            )
        )
    elif kind == "author_not_in_includes":
        data["author_id"] = str(int(data["author_id"]) + 1)
    elif kind == "invalid_utf8":  # text written as Latin-1 by a broken proxy
        data["text"] = "Café " + data["text"]
        return _encode(payload).replace("Café".encode(), b"Caf\xe9", 1)
    else:  # nul_byte: a raw NUL is never valid JSON, wherever it lands
        text = _encode(payload).decode("utf-8")
        cut = rng.randint(0, len(text))
        return (text[:cut] + "\x00" + text[cut:]).encode("utf-8")
    return _encode(payload)
