"""A seeded generator of SYNTHETIC survey data with the course file's header.

    python3 -m lestats demo --out demo.csv

It writes made-up data of any size (the server ships the rebuilt course
file instead, see lestats.data).  Every (question, state) pair gets a
"Total" row and one row of each other stratification category, so every
question, state and category is present; rows past that are drawn at
random.  ``--from CSV`` instead draws rows from
a given file (the benchmark makes its 200k and 1M-row files from the checker
CSV that way, so they have the same groups).  About 2% of made-up rows have
an empty Data_Value with the "~" footnote, as in the real file, to exercise
the loader's skipping.  The numbers are made up: they are not survey results.
"""

import argparse
import csv
import random
import sys
from pathlib import Path
from typing import List, Optional, TextIO

from ..data import open_csv

HEADER = [
    "", "YearStart", "YearEnd", "LocationAbbr", "LocationDesc", "Datasource", "Class",
    "Topic", "Question", "Data_Value_Unit", "Data_Value_Type", "Data_Value",
    "Data_Value_Alt", "Data_Value_Footnote_Symbol", "Data_Value_Footnote",
    "Low_Confidence_Limit", "High_Confidence_Limit ", "Sample_Size", "Total",
    "Age(years)", "Education", "Gender", "Income", "Race/Ethnicity", "GeoLocation",
    "ClassID", "TopicID", "QuestionID", "DataValueTypeID", "LocationID",
    "StratificationCategory1", "Stratification1", "StratificationCategoryId1",
    "StratificationID1",
]

_PA = ("Physical Activity", "Physical Activity - Behavior", "PA", "PA1")
_FV = ("Fruits and Vegetables", "Fruits and Vegetables - Behavior", "FV", "FV1")
_OWS = ("Obesity / Weight Status", "Obesity / Weight Status", "OWS", "OWS1")
_AEROBIC_150 = ("Percent of adults who achieve at least 150 minutes a week of"
                " moderate-intensity aerobic physical activity or 75 minutes a week of"
                " vigorous-intensity aerobic")
# (QuestionID, question, (Class, Topic, ClassID, TopicID), typical value)
QUESTIONS = [
    ("Q018", "Percent of adults who report consuming fruit less than one time daily",
     _FV, 38.0),
    ("Q019", "Percent of adults who report consuming vegetables less than one time daily",
     _FV, 22.0),
    ("Q036", "Percent of adults aged 18 years and older who have obesity", _OWS, 31.0),
    ("Q037", "Percent of adults aged 18 years and older who have an overweight"
     " classification", _OWS, 34.5),
    ("Q043", _AEROBIC_150 + " activity (or an equivalent combination)", _PA, 48.0),
    ("Q044", _AEROBIC_150 + " physical activity and engage in muscle-strengthening"
     " activities on 2 or more days a week", _PA, 21.0),
    ("Q045", "Percent of adults who achieve at least 300 minutes a week of"
     " moderate-intensity aerobic physical activity or 150 minutes a week of"
     " vigorous-intensity aerobic activity (or an equivalent combination)", _PA, 32.0),
    ("Q046", "Percent of adults who engage in muscle-strengthening activities on 2 or"
     " more days a week", _PA, 30.0),
    ("Q047", "Percent of adults who engage in no leisure-time physical activity", _PA, 25.0),
]

# (LocationDesc, LocationAbbr, LocationID)
LOCATIONS = [
    ("Alabama", "AL", 1), ("Alaska", "AK", 2), ("Arizona", "AZ", 4), ("Arkansas", "AR", 5),
    ("California", "CA", 6), ("Colorado", "CO", 8), ("Connecticut", "CT", 9),
    ("Delaware", "DE", 10), ("District of Columbia", "DC", 11), ("Florida", "FL", 12),
    ("Georgia", "GA", 13), ("Hawaii", "HI", 15), ("Idaho", "ID", 16), ("Illinois", "IL", 17),
    ("Indiana", "IN", 18), ("Iowa", "IA", 19), ("Kansas", "KS", 20), ("Kentucky", "KY", 21),
    ("Louisiana", "LA", 22), ("Maine", "ME", 23), ("Maryland", "MD", 24),
    ("Massachusetts", "MA", 25), ("Michigan", "MI", 26), ("Minnesota", "MN", 27),
    ("Mississippi", "MS", 28), ("Missouri", "MO", 29), ("Montana", "MT", 30),
    ("Nebraska", "NE", 31), ("Nevada", "NV", 32), ("New Hampshire", "NH", 33),
    ("New Jersey", "NJ", 34), ("New Mexico", "NM", 35), ("New York", "NY", 36),
    ("North Carolina", "NC", 37), ("North Dakota", "ND", 38), ("Ohio", "OH", 39),
    ("Oklahoma", "OK", 40), ("Oregon", "OR", 41), ("Pennsylvania", "PA", 42),
    ("Rhode Island", "RI", 44), ("South Carolina", "SC", 45), ("South Dakota", "SD", 46),
    ("Tennessee", "TN", 47), ("Texas", "TX", 48), ("Utah", "UT", 49), ("Vermont", "VT", 50),
    ("Virginia", "VA", 51), ("Washington", "WA", 53), ("West Virginia", "WV", 54),
    ("Wisconsin", "WI", 55), ("Wyoming", "WY", 56), ("Guam", "GU", 66),
    ("Puerto Rico", "PR", 72), ("Virgin Islands", "VI", 78), ("National", "US", 59),
]

# category -> (header column holding the stratification, CategoryId, [(Stratification, ID)])
CATEGORIES = {
    "Total": ("Total", "OVR", [("Total", "OVERALL")]),
    "Age (years)": ("Age(years)", "AGEYR", [
        ("18 - 24", "AGEYR1824"), ("25 - 34", "AGEYR2534"), ("35 - 44", "AGEYR3544"),
        ("45 - 54", "AGEYR4554"), ("55 - 64", "AGEYR5564"), ("65 or older", "AGEYR65PLUS")]),
    "Education": ("Education", "EDU", [
        ("Less than high school", "EDUHS"), ("High school graduate", "EDUHSGRAD"),
        ("Some college or technical school", "EDUCOTEC"), ("College graduate", "EDUCOGRAD")]),
    "Gender": ("Gender", "GEN", [("Male", "MALE"), ("Female", "FEMALE")]),
    "Income": ("Income", "INC", [
        ("Less than $15,000", "INCLESS15"), ("$15,000 - $24,999", "INC1525"),
        ("$25,000 - $34,999", "INC2535"), ("$35,000 - $49,999", "INC3550"),
        ("$50,000 - $74,999", "INC5075"), ("$75,000 or greater", "INC75PLUS"),
        ("Data not reported", "INCNR")]),
    "Race/Ethnicity": ("Race/Ethnicity", "RACE", [
        ("Non-Hispanic White", "RACEWHT"), ("Non-Hispanic Black", "RACEBLK"),
        ("Hispanic", "RACEHIS"), ("Asian", "RACEASN"),
        ("Hawaiian/Pacific Islander", "RACEHPI"),
        ("American Indian/Alaska Native", "RACENAA"), ("2 or more races", "RACE2PLUS"),
        ("Other", "RACEOTH")]),
}

DEFAULT_ROWS = 3300
DEFAULT_SEED = 2024
FOOTNOTE = "Data not available because sample size is insufficient."


def _row(rng: random.Random, number: int, question, location, category: str) -> List[str]:
    qid, text, (klass, topic, class_id, topic_id), typical = question
    name, abbr, location_id = location
    column, category_id, strata = CATEGORIES[category]
    stratum, stratum_id = rng.choice(strata)
    year = rng.randint(2011, 2022)
    row = dict.fromkeys(HEADER, "")
    row.update({
        "": str(number), "YearStart": str(year), "YearEnd": str(year),
        "LocationAbbr": abbr, "LocationDesc": name,
        "Datasource": "Behavioral Risk Factor Surveillance System",
        "Class": klass, "Topic": topic, "Question": text, "Data_Value_Type": "Value",
        column: stratum, "ClassID": class_id, "TopicID": topic_id, "QuestionID": qid,
        "DataValueTypeID": "VALUE", "LocationID": str(location_id),
        "StratificationCategory1": category, "Stratification1": stratum,
        "StratificationCategoryId1": category_id, "StratificationID1": stratum_id,
    })
    if rng.random() < 0.02:
        row.update({"Data_Value_Footnote_Symbol": "~", "Data_Value_Footnote": FOOTNOTE})
    else:
        # A state's level is stable across its rows, so rankings mean something.
        level = typical + (location_id * 7919 % 100 - 50) / 10.0
        value = round(max(0.1, level + rng.uniform(-4.0, 4.0)), 1)
        half_width = round(rng.uniform(1.0, 5.0), 1)
        row.update({
            "Data_Value": str(value), "Data_Value_Alt": str(value),
            "Low_Confidence_Limit": str(round(value - half_width, 1)),
            "High_Confidence_Limit ": str(round(value + half_width, 1)),
            "Sample_Size": f"{rng.randint(50, 5000)}.0",
        })
    return [row[column] for column in HEADER]


def generate(out: TextIO, rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED) -> int:
    """Write a header and ``rows`` synthetic rows (at least one per question,
    state and category) to ``out``; return the number of rows written."""
    rng = random.Random(seed)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    plan = [(q, loc, cat) for q in QUESTIONS for loc in LOCATIONS for cat in CATEGORIES]
    categories = list(CATEGORIES)
    while len(plan) < rows:
        plan.append((rng.choice(QUESTIONS), rng.choice(LOCATIONS), rng.choice(categories)))
    for number, (question, location, category) in enumerate(plan):
        writer.writerow(_row(rng, number, question, location, category))
    return len(plan)


def scale(source: Path, out: TextIO, rows: int, seed: int = DEFAULT_SEED) -> int:
    """Write ``source``'s header and ``rows`` rows drawn from it at random
    (seeded, with replacement), each numeric Data_Value nudged by up to 0.5:
    a bigger file with the same questions, states and groups."""
    rng = random.Random(seed)
    with open_csv(source) as stream:
        reader = csv.reader(stream)
        header = next(reader)
        pool = list(reader)
    value = header.index("Data_Value")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for number in range(rows):
        row = list(rng.choice(pool))
        row[0] = str(number)
        try:
            row[value] = str(round(float(row[value]) + rng.uniform(-0.5, 0.5), 1))
        except ValueError:
            pass   # an empty value stays empty
        writer.writerow(row)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    """``python3 -m lestats demo [--rows N] [--seed S] [--from CSV] [--out PATH]``."""
    parser = argparse.ArgumentParser(prog="python3 -m lestats demo",
                                     description="Write synthetic survey data.")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--from", dest="source", type=Path,
                        help="draw the rows from this CSV instead of making them up")
    parser.add_argument("--out", help="output file (default: standard output)")
    args = parser.parse_args(argv)
    if args.out:
        with open(args.out, "w", newline="", encoding="utf-8") as out:
            _write(out, args)
    else:
        _write(sys.stdout, args)
    return 0


def _write(out: TextIO, args: argparse.Namespace) -> None:
    if args.source:
        scale(args.source, out, args.rows, args.seed)
    else:
        generate(out, args.rows, args.seed)
