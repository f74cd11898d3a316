"""The demo task: short arithmetic and world-capital questions, and the rule judge that scores answers.

Everything is generated here by code (no downloaded data, nothing to license): prompts such as
"What is 23 + 58?" or "What is the capital of Japan?", split deterministically into train and
held-out sets, and `judge(prompt, completion)` with two criteria, most important first:

    correct = 1 if the correct answer is given as the answer   (numbers may carry commas; capitals
                                                                 match case- and accent-insensitively)
    concise = 1 if the answer is 1..12 words long

`judge.question_of(prompt)` names the item a prompt asks about (a country, or an operation on two numbers), so the
report counts a country's six phrasings as one question, not six (`hf_dpo.pairs.judges.judge_questions`).

Write the prompt files (`make demo-prompts`):

    python -m hf_dpo.pairs.demo_task recipes/data
"""

from __future__ import annotations

import hashlib
import random
import re
import sys
import unicodedata
from functools import cache
from pathlib import Path

SPLITS = ("train", "test")
# Share of questions (by item: a country, or an operation on two numbers) kept for the held-out split. Capitals
# are held out three times as often as sums: the report counts questions, and a 135M model answers few sums at
# all (held-out and validation alike), so held-out countries are where a gain can show.
HELD_OUT_PERCENT = {"capital": 30, "arithmetic": 10}
HELD_OUT_PHRASINGS = 3  # of a held-out country's six phrasings, alternately the even or the odd ones
MAX_WORDS = 12

# Country -> capital (and accepted alternatives). Capitals as commonly given in English.
CAPITALS: dict[str, tuple[str, ...]] = {
    "Afghanistan": ("Kabul",),
    "Albania": ("Tirana",),
    "Algeria": ("Algiers",),
    "Angola": ("Luanda",),
    "Argentina": ("Buenos Aires",),
    "Armenia": ("Yerevan",),
    "Australia": ("Canberra",),
    "Austria": ("Vienna",),
    "Azerbaijan": ("Baku",),
    "Bahamas": ("Nassau",),
    "Bahrain": ("Manama",),
    "Bangladesh": ("Dhaka",),
    "Barbados": ("Bridgetown",),
    "Belarus": ("Minsk",),
    "Belgium": ("Brussels",),
    "Belize": ("Belmopan",),
    "Bhutan": ("Thimphu",),
    "Bolivia": ("Sucre", "La Paz"),
    "Bosnia and Herzegovina": ("Sarajevo",),
    "Botswana": ("Gaborone",),
    "Brazil": ("Brasilia",),
    "Bulgaria": ("Sofia",),
    "Burkina Faso": ("Ouagadougou",),
    "Cambodia": ("Phnom Penh",),
    "Cameroon": ("Yaounde",),
    "Canada": ("Ottawa",),
    "Central African Republic": ("Bangui",),
    "Chile": ("Santiago",),
    "China": ("Beijing",),
    "Colombia": ("Bogota",),
    "Comoros": ("Moroni",),
    "Costa Rica": ("San Jose",),
    "Croatia": ("Zagreb",),
    "Cuba": ("Havana",),
    "Cyprus": ("Nicosia",),
    "Czechia": ("Prague",),
    "Denmark": ("Copenhagen",),
    "Dominican Republic": ("Santo Domingo",),
    "Ecuador": ("Quito",),
    "Egypt": ("Cairo",),
    "Equatorial Guinea": ("Malabo",),
    "Eritrea": ("Asmara",),
    "Estonia": ("Tallinn",),
    "Eswatini": ("Mbabane", "Lobamba"),
    "Ethiopia": ("Addis Ababa",),
    "Fiji": ("Suva",),
    "Finland": ("Helsinki",),
    "France": ("Paris",),
    "Gabon": ("Libreville",),
    "Gambia": ("Banjul",),
    "Georgia": ("Tbilisi",),
    "Germany": ("Berlin",),
    "Ghana": ("Accra",),
    "Greece": ("Athens",),
    "Guatemala": ("Guatemala City",),
    "Guinea": ("Conakry",),
    "Guyana": ("Georgetown",),
    "Honduras": ("Tegucigalpa",),
    "Hungary": ("Budapest",),
    "Iceland": ("Reykjavik",),
    "India": ("New Delhi",),
    "Indonesia": ("Jakarta",),
    "Iran": ("Tehran",),
    "Iraq": ("Baghdad",),
    "Ireland": ("Dublin",),
    "Israel": ("Jerusalem",),
    "Italy": ("Rome",),
    "Jamaica": ("Kingston",),
    "Japan": ("Tokyo",),
    "Jordan": ("Amman",),
    "Kazakhstan": ("Astana",),
    "Kenya": ("Nairobi",),
    "Kuwait": ("Kuwait City",),
    "Kyrgyzstan": ("Bishkek",),
    "Laos": ("Vientiane",),
    "Latvia": ("Riga",),
    "Lebanon": ("Beirut",),
    "Lesotho": ("Maseru",),
    "Liberia": ("Monrovia",),
    "Libya": ("Tripoli",),
    "Liechtenstein": ("Vaduz",),
    "Lithuania": ("Vilnius",),
    "Luxembourg": ("Luxembourg",),
    "Madagascar": ("Antananarivo",),
    "Malawi": ("Lilongwe",),
    "Malaysia": ("Kuala Lumpur",),
    "Mali": ("Bamako",),
    "Malta": ("Valletta",),
    "Mauritania": ("Nouakchott",),
    "Mauritius": ("Port Louis",),
    "Mexico": ("Mexico City",),
    "Moldova": ("Chisinau",),
    "Mongolia": ("Ulaanbaatar", "Ulan Bator"),
    "Montenegro": ("Podgorica",),
    "Morocco": ("Rabat",),
    "Mozambique": ("Maputo",),
    "Myanmar": ("Naypyidaw", "Naypyitaw", "Nay Pyi Taw"),
    "Namibia": ("Windhoek",),
    "Nepal": ("Kathmandu",),
    "Netherlands": ("Amsterdam",),
    "New Zealand": ("Wellington",),
    "Nicaragua": ("Managua",),
    "Niger": ("Niamey",),
    "Nigeria": ("Abuja",),
    "North Korea": ("Pyongyang",),
    "North Macedonia": ("Skopje",),
    "Norway": ("Oslo",),
    "Oman": ("Muscat",),
    "Pakistan": ("Islamabad",),
    "Panama": ("Panama City",),
    "Papua New Guinea": ("Port Moresby",),
    "Paraguay": ("Asuncion",),
    "Peru": ("Lima",),
    "Philippines": ("Manila",),
    "Poland": ("Warsaw",),
    "Portugal": ("Lisbon",),
    "Qatar": ("Doha",),
    "Romania": ("Bucharest",),
    "Russia": ("Moscow",),
    "Rwanda": ("Kigali",),
    "Samoa": ("Apia",),
    "Saudi Arabia": ("Riyadh",),
    "Senegal": ("Dakar",),
    "Serbia": ("Belgrade",),
    "Sierra Leone": ("Freetown",),
    "Singapore": ("Singapore",),
    "Slovakia": ("Bratislava",),
    "Slovenia": ("Ljubljana",),
    "Solomon Islands": ("Honiara",),
    "Somalia": ("Mogadishu",),
    "South Africa": ("Pretoria", "Cape Town", "Bloemfontein"),
    "South Korea": ("Seoul",),
    "South Sudan": ("Juba",),
    "Spain": ("Madrid",),
    "Sri Lanka": ("Colombo", "Sri Jayawardenepura Kotte"),
    "Sudan": ("Khartoum",),
    "Suriname": ("Paramaribo",),
    "Sweden": ("Stockholm",),
    "Switzerland": ("Bern", "Berne"),
    "Syria": ("Damascus",),
    "Taiwan": ("Taipei",),
    "Tajikistan": ("Dushanbe",),
    "Tanzania": ("Dodoma",),
    "Thailand": ("Bangkok",),
    "Togo": ("Lome",),
    "Tunisia": ("Tunis",),
    "Turkey": ("Ankara",),
    "Turkmenistan": ("Ashgabat",),
    "Uganda": ("Kampala",),
    "Ukraine": ("Kyiv", "Kiev"),
    "United Arab Emirates": ("Abu Dhabi",),
    "United Kingdom": ("London",),
    "United States": ("Washington", "Washington, D.C."),
    "Uruguay": ("Montevideo",),
    "Uzbekistan": ("Tashkent",),
    "Vanuatu": ("Port Vila",),
    "Venezuela": ("Caracas",),
    "Vietnam": ("Hanoi",),
    "Yemen": ("Sanaa", "Sana'a"),
    "Zambia": ("Lusaka",),
    "Zimbabwe": ("Harare",),
}

CAPITAL_PHRASINGS = (
    "What is the capital of {country}?",
    "Which city is the capital of {country}?",
    "Name the capital city of {country}.",
    "What city is {country}'s capital?",
    "Tell me the capital of {country}.",
    "What is {country}'s capital city?",
)

# op -> (phrasings, operand ranges, result)
ARITHMETIC = {
    "+": (
        ("What is {a} + {b}?", "What is {a} plus {b}?", "Add {a} and {b}.", "Compute {a} + {b}."),
        (2, 99),
        int.__add__,
    ),
    "-": (
        ("What is {a} - {b}?", "What is {a} minus {b}?", "Subtract {b} from {a}.", "Compute {a} - {b}."),
        (2, 99),
        int.__sub__,
    ),
    "*": (
        (
            "What is {a} * {b}?",
            "What is {a} times {b}?",
            "Multiply {a} by {b}.",
            "What is {a} multiplied by {b}?",
        ),
        (2, 12),
        int.__mul__,
    ),
}
ARITHMETIC_ITEMS = {
    "+": 700,
    "-": 500,
    "*": 100,
}  # distinct operand pairs per operation (at most 11*11 products)

_NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?![\d])|(?<![\w.])-?\d+")
_ARITH_PROMPT = re.compile(
    r"(?:Subtract\s+(?P<sb>-?\d+)\s+from\s+(?P<sa>-?\d+))"
    r"|(?:Add\s+(?P<aa>-?\d+)\s+and\s+(?P<ab>-?\d+))"
    r"|(?:Multiply\s+(?P<ma>-?\d+)\s+by\s+(?P<mb>-?\d+))"
    r"|(?:(?P<a>-?\d+)\s*(?P<op>\+|-|\*|x|×|plus|minus|times|multiplied by)\s*(?P<b>-?\d+))",
    re.IGNORECASE,
)
_OPS = {
    "+": "+",
    "plus": "+",
    "-": "-",
    "minus": "-",
    "*": "*",
    "x": "*",
    "×": "*",
    "times": "*",
    "multiplied by": "*",
}


def _bucket(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % 100


def _split_of(key: str, kind: str) -> str:
    """Deterministic split by item (all phrasings of one question land on the same side)."""
    return "test" if _bucket(key) < HELD_OUT_PERCENT[kind] else "train"


@cache
def _all_prompts() -> dict[str, tuple[str, ...]]:
    rng = random.Random(1234)
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for country in CAPITALS:
        key = f"capital:{country}"
        split = _split_of(key, "capital")
        phrasings = CAPITAL_PHRASINGS
        if split == "test":
            # more held-out countries in the same number of prompts: the report counts questions, not phrasings
            phrasings = CAPITAL_PHRASINGS[_bucket(key) % 2 :: 2][:HELD_OUT_PHRASINGS]
        out[split].extend(p.format(country=country) for p in phrasings)
    for op, count in ARITHMETIC_ITEMS.items():
        phrasings, (lo, hi), _ = ARITHMETIC[op]
        seen: set[tuple[int, int]] = set()
        while len(seen) < count:
            a, b = rng.randint(lo, hi), rng.randint(lo, hi)
            if op == "-" and a < b:
                a, b = b, a  # keep results non-negative: the demo is about format, not sign handling
            if (a, b) in seen:
                continue
            seen.add((a, b))
            out[_split_of(f"{op}:{a}:{b}", "arithmetic")].append(rng.choice(phrasings).format(a=a, b=b))
    for split in SPLITS:
        random.Random(split).shuffle(out[split])  # mix the two kinds so any prefix is a fair sample
    return {s: tuple(v) for s, v in out.items()}


def demo_prompts(split: str) -> list[str]:
    """The demo prompts of `split` ("train" or "test"); the same list on every machine and run."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return list(_all_prompts()[split])


def _fold(text: str) -> str:
    """Lower-case, accents stripped: 'Bogotá' and 'bogota' compare equal."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def parse_numbers(text: str) -> list[int]:
    """Integers in `text`, with thousands separators: 'It is 1,234.' -> [1234]."""
    return [int(m.group().replace(",", "")) for m in _NUMBER.finditer(text)]


@cache
def _country_names() -> tuple[re.Pattern, dict[str, str]]:
    """One pattern for every country name (longest first, so "South Korea" wins over a name it contains)."""
    by_folded = {_fold(country): country for country in CAPITALS}
    names = sorted(by_folded, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(map(re.escape, names)) + r")\b"), by_folded


def prompt_country(prompt: str) -> str | None:
    """The country a capital-city prompt asks about (the longest name it holds), or None."""
    pattern, by_folded = _country_names()
    found = [m.group() for m in pattern.finditer(_fold(prompt))]
    return by_folded[max(found, key=len)] if found else None


def arithmetic_of(prompt: str) -> tuple[str, int, int] | None:
    """(op, a, b) of an arithmetic prompt, whatever its phrasing: "Subtract 7 from 55." -> ("-", 55, 7)."""
    m = _ARITH_PROMPT.search(prompt)
    if not m:
        return None
    g = m.groupdict()
    if g["sa"] is not None:
        return "-", int(g["sa"]), int(g["sb"])
    if g["aa"] is not None:
        return "+", int(g["aa"]), int(g["ab"])
    if g["ma"] is not None:
        return "*", int(g["ma"]), int(g["mb"])
    return _OPS[g["op"].lower()], int(g["a"]), int(g["b"])


def item_of(prompt: str) -> tuple[str, int, int] | str:
    """What a demo prompt asks: (op, a, b) of a sum, or the country of a capital question. ValueError if neither."""
    item = arithmetic_of(prompt) or prompt_country(prompt)
    if item is None:
        raise ValueError(f"not a demo-task prompt (no arithmetic and no known country): {prompt!r}")
    return item


def expected_answer(prompt: str) -> int | tuple[str, ...]:
    """The correct answer to a demo prompt: an int, or the accepted capital names. ValueError if none."""
    item = item_of(prompt)
    if isinstance(item, str):
        return CAPITALS[item]
    op, a, b = item
    return ARITHMETIC[op][2](a, b)


_FILLER = r"(?:(?:indeed|called|known as|officially|now|the city of|the city)\s+)*"


def _answer_slots(folded: str, country: str) -> list[str]:
    """What follows "the capital (city) of <country> is" / "<country>'s capital (city) is" in `folded`: the
    slots where the answer says what the capital is."""
    name = re.escape(_fold(country))
    pattern = rf"(?:\bcapital(?: city)? of (?:the )?{name}|\b{name}'s capital(?: city)?) is {_FILLER}([a-z][a-z .,'-]*)"
    return [m.group(1) for m in re.finditer(pattern, folded)]


# Words that may stand before "is the capital of <country>" without naming a city: "It is the capital of Spain."
_NOT_A_NAME = frozenset("it this that which and so yes also the city its capital".split())


def _named_as_capital(folded: str, country: str) -> list[str]:
    """What each "<X> is the capital (city) of <country>" / "<X> is <country>'s capital" in `folded` names as the
    capital: X, the clause before "is" ("" where it names nothing, as "it" or "this city" do)."""
    name = re.escape(_fold(country))
    pattern = rf"\bis (?:the |a )?(?:capital(?: city)? of (?:the )?{name}\b|{name}'s capital)"
    subjects = []
    for m in re.finditer(pattern, folded):
        clause = re.split(r"[.;:!?\n]", folded[: m.start()])[-1]
        names_something = any(w not in _NOT_A_NAME for w in re.findall(r"[a-z][a-z'-]*", clause))
        subjects.append(clause if names_something else "")
    return subjects


def _named(folded: str, names) -> bool:
    return _any_of(tuple(names)).search(folded) is not None


@cache
def _any_of(names: tuple[str, ...]) -> re.Pattern:
    """Any of the names as a whole word, case- and accent-folded (compiled once per set of names)."""
    return re.compile(r"\b(?:" + "|".join(re.escape(_fold(name)) for name in names) + r")\b")


@cache
def _competitors(country: str) -> tuple[tuple[str, ...], re.Pattern]:
    """Other countries' capitals (those not also accepted here), and a claim "capital of <another country>"."""
    accepted = {_fold(a) for a in CAPITALS[country]}
    others = tuple(
        c for other, names in CAPITALS.items() if other != country for c in names if _fold(c) not in accepted
    )
    other_countries = "|".join(re.escape(_fold(other)) for other in CAPITALS if other != country)
    return others, re.compile(rf"\bcapital (?:city )?of (?:the )?(?:{other_countries})\b")


def is_correct(prompt: str, completion: str) -> bool:
    """Whether `completion` gives the correct answer as its answer.

    Arithmetic: the result appears and no other candidate does (numbers from the question itself may be
    repeated, as in "23 + 58 = 81"; "81 or 82" is not an answer). Capitals: an accepted name appears as a whole
    word, case- and accent-insensitively, and no competing answer does: no other country's capital ("Pyongyang,
    also known as Seoul"), no "capital of <another country>", and a sentence "the capital of <country> is
    <name>" has an accepted name in that slot ("The capital of Ghana is Kumasi, also known as Accra." is wrong), as
    does "<name> is the capital of <country>" ("Santai is Singapore's capital city, Singapore." is wrong).
    The question's own country named as such ("the capital of Singapore", "Singapore's") is not an answer, for
    capitals that bear the country's name (Singapore, Luxembourg): "The capital of Singapore is Jakarta." is
    wrong.
    """
    answer = expected_answer(prompt)
    if isinstance(answer, int):
        found = set(parse_numbers(completion))
        candidates = found - set(parse_numbers(prompt))
        return answer in found and candidates <= {answer}
    country = prompt_country(prompt)
    folded = _fold(completion)
    name = re.escape(_fold(country))
    stated = re.sub(rf"\b(?:of|in) (?:the )?{name}\b(?! city)|\b{name}'s\b", " ", folded)
    if not _named(stated, answer):
        return False
    accepted = {_fold(a) for a in answer}
    # Where the answer says what the capital is ("the capital of Ghana is Kumasi, also known as Accra"), the
    # name in that slot must be an accepted one: a later mention of the right name does not undo a wrong one.
    for slot in _answer_slots(folded, country):
        if not any(slot.startswith(capital) for capital in accepted):
            return False
    # The same the other way round: "SingSat is the capital of Singapore, also known as Singapore" names SingSat.
    for subject in _named_as_capital(folded, country):
        if subject and not _named(subject, answer):
            return False
    others, claims_other = _competitors(country)
    return not _named(folded, others) and claims_other.search(folded) is None


def judge(prompt: str, completion: str) -> dict[str, float]:
    """Demo judge, two criteria in order of importance: `correct` (1 for the correct answer) and `concise`
    (1 for an answer of 1..12 words). Compared correct first: a concise wrong answer never beats a correct one."""
    n_words = len(completion.split())
    return {"correct": float(is_correct(prompt, completion)), "concise": float(1 <= n_words <= MAX_WORDS)}


def question_of(prompt: str) -> str:
    """The item a prompt asks about, the same for every phrasing of it (a country, or an operation on two
    numbers): the report resamples a question's phrasings together."""
    item = item_of(prompt)
    # the item key the split hashes
    return f"capital:{item}" if isinstance(item, str) else "{}:{}:{}".format(*item)


judge.criteria = ("correct", "concise")
judge.question_of = question_of


def write_prompt_files(directory: str | Path) -> list[Path]:
    """Write demo_prompts_train.txt and demo_prompts_test.txt (one prompt a line) into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for split in SPLITS:
        path = directory / f"demo_prompts_{split}.txt"
        path.write_text("".join(p + "\n" for p in demo_prompts(split)))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_prompt_files(sys.argv[1] if len(sys.argv) > 1 else "recipes/data"):
        print(f"wrote {path} ({sum(1 for _ in path.open())} prompts)")
