import pytest
import torch

from tl_diffusion_prior.evaluate.auroc import auroc, column_auroc, grouped_auroc_ci


def _pairwise_auroc(scores, labels):
    """Brute-force Mann-Whitney: every positive against every negative, ties count one half."""
    pos, neg = scores[labels], scores[~labels]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def test_perfect_reversed_and_uninformative_scores():
    labels = torch.tensor([0, 0, 0, 1, 1], dtype=torch.bool)
    scores = torch.tensor([0.1, 0.2, 0.3, 0.8, 0.9])
    assert auroc(scores, labels) == 1.0
    assert auroc(-scores, labels) == 0.0
    assert auroc(torch.ones(5), labels) == 0.5  # all tied: knows nothing


def test_columns_match_the_pairwise_definition_with_ties():
    gen = torch.Generator().manual_seed(1)
    labels = torch.rand(300, generator=gen) < 0.3
    # Column 0 continuous, column 1 heavily tied (a sparse latent), column 2 informative.
    features = torch.stack(
        [
            torch.randn(300, generator=gen),
            torch.randint(0, 3, (300,), generator=gen).float(),
            labels.float() + torch.randn(300, generator=gen),
        ],
        dim=1,
    )
    got = column_auroc(features, labels)
    for k in range(3):
        assert float(got[k]) == pytest.approx(_pairwise_auroc(features[:, k], labels), abs=1e-12)
    assert float(got[2]) > 0.7


def test_one_class_or_wrong_sizes_are_refused():
    with pytest.raises(ValueError, match="both classes"):
        auroc(torch.rand(4), torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="booleans or 0/1"):
        auroc(torch.rand(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="NaN"):
        auroc(torch.tensor([0.0, float("nan")]), torch.tensor([0, 1]))


def test_bootstrap_interval_holds_the_auroc_and_widens_with_clustering():
    gen = torch.Generator().manual_seed(0)
    n_docs, per_doc = 40, 25
    # Whole documents are positive or negative (another domain against the clean one), and a
    # per-document offset shared by its rows makes them correlated: rows are not independent.
    doc = torch.arange(n_docs).repeat_interleave(per_doc)
    labels = (doc % 2).bool()
    offsets = torch.randn(n_docs, generator=gen)[doc] * 2
    scores = labels.double() * 0.5 + offsets + 0.3 * torch.randn(len(doc), generator=gen)
    grouped = grouped_auroc_ci(scores, labels, doc, n_resamples=400)
    rows = grouped_auroc_ci(scores, labels, None, n_resamples=400)
    assert grouped.mean == pytest.approx(_pairwise_auroc(scores, labels))
    assert grouped.low <= grouped.mean <= grouped.high
    assert grouped.n == n_docs and rows.n == n_docs * per_doc
    assert grouped.high - grouped.low > 1.5 * (rows.high - rows.low)
    again = grouped_auroc_ci(scores, labels, doc, n_resamples=400)
    assert (again.low, again.high) == (grouped.low, grouped.high)


def test_every_resample_keeps_both_classes_when_positives_are_few_documents():
    # 2 positive documents among 30: an unstratified resample often draws neither, and a
    # resample without positives has no AUROC (it would drag the interval's low end to 0).
    doc = torch.arange(32).repeat_interleave(5)
    labels = doc < 2
    scores = labels.double() + torch.linspace(0, 0.5, len(doc))  # separates perfectly
    interval = grouped_auroc_ci(scores, labels, doc, n_resamples=300)
    assert (interval.mean, interval.low, interval.high) == (1.0, 1.0, 1.0)
