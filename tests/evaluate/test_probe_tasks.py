import pytest
import torch

from tl_diffusion_prior.evaluate.probe_tasks import (
    DEFAULT_TASKS,
    capitalised_mid_sentence,
    contains_digit,
    document_folds,
    document_split,
    inside_parentheses,
    inside_quotation,
    line_initial,
    sentence_initial,
    task_labels,
)


def _words(text):
    """Word-level spans as a GPT-2 style tokenizer gives them: leading space in the token."""
    spans, start = [], 0
    for index in range(1, len(text) + 1):
        if index == len(text) or (text[index] in ' "(),.\n' or text[index - 1] in '"(),.\n'):
            if text[start:index]:
                spans.append((start, index))
            start = index
    return spans


TEXT = 'She said "Go to Paris now." Then we left (in 1999).\nNext line'


def _by_token(labeller, text=TEXT):
    spans = _words(text)
    return {text[a:b]: label for (a, b), label in zip(spans, labeller(text, spans), strict=True)}


def test_hand_written_text_gets_the_expected_labels():
    quote = _by_token(inside_quotation)
    assert quote[" Paris"] == 1 and quote["Go"] == 1 and quote[" Then"] == 0
    assert quote['"'] == -1 and quote[" said"] == 0
    paren = _by_token(inside_parentheses)
    assert paren["in"] == 1 and paren[" 1999"] == 1 and paren[" left"] == 0 and paren["("] == -1
    initial = _by_token(sentence_initial)
    assert initial["She"] == 1 and initial[" Then"] == 1 and initial[" said"] == 0
    assert initial["Next"] == 0  # a new line after no full stop is not a new sentence
    assert initial["."] == -1 and initial[" 1999"] == -1
    capital = _by_token(capitalised_mid_sentence)
    assert capital[" Paris"] == 1 and capital[" now"] == 0
    assert capital["She"] == -1 and capital[" Then"] == -1 and capital["Next"] == -1
    digit = _by_token(contains_digit)
    assert digit[" 1999"] == 1 and digit[" left"] == 0
    line = _by_token(line_initial)
    assert line["She"] == 1 and line["Next"] == 1 and line[" line"] == 0 and line["\n"] == -1


def test_blank_line_starts_a_sentence_and_curly_quotes_count():
    text = "a heading\n\nThe body \u201cquoted Word\u201d ends"
    initial = _by_token(sentence_initial, text)
    assert initial["The"] == 1 and initial[" heading"] == 0
    spans = [(text.index("quoted"), text.index("quoted") + 6), (text.index("ends"), len(text))]
    assert inside_quotation(text, spans) == [1, 0]


def test_source_tasks_and_concatenated_labels():
    tasks = {task.name: task for task in DEFAULT_TASKS}
    assert len(tasks) >= 6
    texts = ["x = 1", "Emma walked.", "SELECT 1;", "Dear sir"]
    spans = [[(0, 1), (1, 5)], [(0, 4)], [(0, 6), (6, 9)], [(0, 4)]]
    sources = ["python_code", "austen", "sqlite_docs", "fortunes"]
    assert task_labels(tasks["code"], texts, spans, sources).tolist() == [1, 1, 0, 0, 0, 0]
    literature = task_labels(tasks["literature_vs_manuals"], texts, spans, sources)
    assert literature.tolist() == [-1, -1, 1, 0, 0, -1]


def test_document_split_and_folds_never_share_a_document():
    doc_ids = torch.arange(30).repeat_interleave(7)[torch.randperm(210)]
    is_test = document_split(30, 0.3, seed=2)
    assert int(is_test.sum()) == 9
    test_rows, train_rows = is_test[doc_ids], ~is_test[doc_ids]
    assert not set(doc_ids[test_rows].tolist()) & set(doc_ids[train_rows].tolist())
    folds = document_folds(doc_ids, 5, seed=1)
    for doc in range(30):
        assert folds[doc_ids == doc].unique().numel() == 1
    assert torch.bincount(folds).tolist() == [42] * 5  # 6 documents of 7 rows in each fold
    assert not torch.equal(document_split(30, 0.3, seed=3), is_test)
    with pytest.raises(ValueError, match="n_folds"):
        document_folds(torch.arange(3), 5)
