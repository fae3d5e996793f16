import doctest

from . import names


def load_tests(loader, tests, ignore):
    tests.addTests(doctest.DocTestSuite(names))
    return tests
