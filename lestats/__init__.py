"""lestats: a statistics server for the US Nutrition, Physical Activity, and
Obesity survey, compatible with the "Le Stats Sportif" course checker."""

__version__ = "1.0.0"
