import pytest

from psyling.stimuli.formula import FormulaError, Term, evaluate, parse_formula, terms

VALUES = {("5", "a"): 3.0, ("5", "b"): 1.0, ("6", "a"): 2.0, ("6", "b"): 2.0, ("*", "a"): 10.0}


def ev(formula):
    return evaluate(parse_formula(formula), lambda t: VALUES[(t.region, t.condition)])


@pytest.mark.parametrize("formula,expected", [
    ("(5;%a%) > (5;%b%)", True),
    ("(5;%a%)>(5;%b%)", True),
    ("(5;%a%) < (5;%b%)", False),
    ("(6;%a%) = (6;%b%)", True),
    ("(5;%a%) - (5;%b%) > 1.5", True),
    ("[(5;%a%) - (5;%b%)] > [(6;%a%) - (6;%b%)]", True),
    ("[(5;%a%) > (5;%b%)] & [(6;%a%) > (6;%b%)]", False),
    ("[(5;%a%) > (5;%b%)] | [(6;%a%) > (6;%b%)]", True),
    ("((5;%a%) > (5;%b%)) & ((6;%a%) = (6;%b%))", True),
    ("(*;%a%) > 9.5", True),
    ("-(5;%a%) < -2.5", True),
    ("[[(5;%a%) + (6;%a%)] - [(5;%b%) + (6;%b%)]] > 0", True),
])
def test_formula_values(formula, expected):
    assert ev(formula) is expected


def test_equality_uses_syntaxgym_tolerance():
    node = parse_formula("(1;%a%) = (1;%b%)")
    assert evaluate(node, lambda t: 5.0 if t.condition == "a" else 5.0009)
    assert not evaluate(node, lambda t: 5.0 if t.condition == "a" else 5.002)


def test_terms_named_regions_and_conditions_with_dashes():
    node = parse_formula("(verb; %no-obj_no-comma%) > ( verb ;%obj_comma%)")
    assert terms(node) == [Term("verb", "no-obj_no-comma"), Term("verb", "obj_comma")]


@pytest.mark.parametrize("formula,message", [
    ("", "empty formula"),
    ("(5;%a%) >", "unexpected end"),
    ("(5;%a%) > (5;%b%", "expected"),
    ("[(5;%a%) > (5;%b%)", "expected ']'"),
    ("(5;%a%) + (5;%b%)", "not a comparison"),
    ("(5;%a%) & (5;%b%)", "needs comparisons"),
    ("[(5;%a%) > 1] + 2 > 1", "needs numbers"),
    ("(5;%a%) > (5;%b%) junk", "unexpected"),
])
def test_bad_formulas(formula, message):
    with pytest.raises(FormulaError, match=message):
        parse_formula(formula)


def test_expressions_for_human_effects_allow_products_and_reject_comparisons():
    from psyling.stimuli.formula import parse_expression
    tree = parse_expression("[((v;%a%) - (v;%b%)) + ((v;%c%) - (v;%d%))] / 2")
    values = {"a": 5.0, "b": 1.0, "c": 4.0, "d": 2.0}
    assert evaluate(tree, lambda term: values[term.condition]) == 3.0
    assert evaluate(parse_expression("2 * (v;%a%) - 3"), lambda term: values[term.condition]) == 7.0
    with pytest.raises(FormulaError, match="is a comparison"):
        parse_expression("(v;%a%) > (v;%b%)")
