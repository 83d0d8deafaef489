"""A two-condition stimulus set written for the tests (start | verb | end, good vs bad verb), as manifest text."""


def verb_set_yaml(name: str, phenomenon: str) -> str:
    """The manifest of a set NAME whose items are NAME.csv: the bad verb should be more surprising."""
    return (f"schema_version: 1\nname: {name}\nphenomenon: {phenomenon}\nlicense: CC-BY-4.0\n"
            f"citation: written for this test\nitems: {name}.csv\nregions: [start, verb, end]\n"
            'conditions: [good, bad]\npredictions:\n  - "(verb;%bad%) > (verb;%good%)"\n')
