"""The examples in the package's docstrings run as tests."""

import doctest

from django_estuary import consumer, events, layers, scope, settings, signing, testing, views, worker


def load_tests(loader, tests, ignore):
    for module in (consumer, events, layers, scope, settings, signing, testing, views, worker):
        tests.addTests(doctest.DocTestSuite(module))
    return tests
