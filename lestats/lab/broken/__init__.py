"""DELIBERATELY BROKEN code: the mistakes of the bug lab.

Every class and function here is wrong on purpose, in one place, marked
``# BROKEN:``.  Nothing in lestats imports this package except the lab
(``python3 -m lestats.lab``) and the server's option
``--broken-pool-for-teaching NAME``.  Do not use any of it for anything else.
"""
