"""Every anomaly score of the project: one named function of a model's per-pixel ingredients.

Higher = more anomalous, for every score. An ingredient is a tensor whose first dimension is the
class (K, ...) or that has no class dimension (...); the trailing dimensions are the pixels, at
any resolution (the feature grid inside a model, the image in the evaluator):

    logits            (K, ...)  class logits ("sem_seg" of a per-pixel model; for Mask2Former the
                                log of its semantic scores, as detectron2's "sem_seg")
    log_likelihood    (K, ...)  log p(x | c) of a GMM head, best component per class
    log_marginal      (...)     log of the mixture marginal: logsumexp over every (class,
                                component) Gaussian of log N, minus log(K M) (equal weights)
    log_background    (...)     log p_background(x): one class-agnostic mixture of all known
                                embeddings, fitted after training (gmm/background.py)
    similarity        (K, ...)  ProtoSeg: cosine of the embedding to the class's nearest prototype
    mask_scores       (K, ...)  mask classification: sum_q p_q(k) m_q(x) (class posteriors of the
                                queries times their mask probabilities, "no object" left out)
    query_mass        (...)     mask classification: sum_q m_q(x) max_k p_q(k)
    query_likelihood  (...)     Mask2Former with a GMM class head: sum_q w_q(x) max_k log p(e_q | k)
                                / sum_q w_q(x), w_q(x) = m_q(x) (1 - p_q(no object))
    weighted_mask_scores (K, ...) Mask2Former with a GMM class head and MODEL.ANOMALY_FIT:
                                sum_q p_q(k) m_q(x) lambda_q, lambda_q = the share of known pixels
                                whose query likelihood is below the query's own
                                (`query_likelihood_weights`)

A model provides the ingredients it has; a score is available when all it needs is there.
Adding a score is one `register_score` here and its value test (tests/test_scores_table.py).
"""

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import torch

__all__ = [
    "INGREDIENTS",
    "SCORES",
    "AnomalyScore",
    "register_score",
    "available_scores",
    "compute_scores",
    "score_labels",
    "score_ingredients",
    "DEFAULT_MAPS",
    "default_map",
    "check_score_name",
    "SCORE_KEY",
    "FITTED",
    "FittedScore",
    "register_fitted_score",
    "fitted_scores",
    "query_likelihood_weights",
]

SCORE_KEY = "MODEL.ANOMALY_SCORE"  # the config key that names a model's anomaly map

INGREDIENTS = (
    "logits",
    "log_likelihood",
    "log_marginal",
    "log_background",
    "similarity",
    "mask_scores",
    "query_mass",
    "query_likelihood",
    "weighted_mask_scores",
)


@dataclass(frozen=True)
class AnomalyScore:
    name: str
    label: str  # the legend of plots and tables
    needs: Tuple[str, ...]  # the ingredients it reads
    fn: Callable[..., torch.Tensor]  # fn(**{ingredient: tensor}) -> (...) score, float32


SCORES: "OrderedDict[str, AnomalyScore]" = OrderedDict()


def register_score(name: str, label: str, *needs: str):
    """Decorator: add `fn(<needs>...)` to the table under `name` (its arguments name its ingredients)."""
    unknown = [n for n in needs if n not in INGREDIENTS]
    if unknown:
        raise ValueError(
            f"score {name!r} needs unknown ingredients {unknown}; known: {INGREDIENTS}"
        )

    def add(fn):
        if name in SCORES:
            raise ValueError(f"anomaly score {name!r} is registered twice")
        SCORES[name] = AnomalyScore(name, label, tuple(needs), fn)
        return fn

    return add


def available_scores(ingredients: Iterable[str]) -> List[str]:
    """Names of the scores computable from these ingredients, in table order."""
    have = set(ingredients)
    return [s.name for s in SCORES.values() if set(s.needs) <= have]


def compute_scores(
    ingredients: Dict[str, torch.Tensor], names: Optional[Iterable[str]] = None
) -> "OrderedDict[str, torch.Tensor]":
    """{name: score map} of `names` (default: every available score, in table order) from
    {ingredient: tensor}. An unknown name or a missing ingredient raises ValueError naming it."""
    names = available_scores(ingredients) if names is None else list(names)
    out = OrderedDict()
    for name in names:
        if name not in SCORES:
            raise ValueError(f"unknown anomaly score {name!r}; the table has {list(SCORES)}")
        score = SCORES[name]
        missing = [n for n in score.needs if n not in ingredients]
        if missing:
            raise ValueError(
                f"anomaly score {name!r} needs {missing}, which this model does not provide "
                f"(it provides {sorted(ingredients)}; available: {available_scores(ingredients)})"
            )
        out[name] = score.fn(**{n: ingredients[n].float() for n in score.needs})
    return out


def score_labels() -> "OrderedDict[str, str]":
    """{name: legend label} of every score, the fitted ones last, in table order."""
    return OrderedDict(
        [(s.name, s.label) for s in SCORES.values()] + [(f.name, f.label) for f in FITTED.values()]
    )


def score_ingredients(name: str) -> Tuple[str, ...]:
    """The ingredients score `name` reads, in INGREDIENTS order; for a fitted score, those of the
    scores it standardises. ("logits",) only: a score of the softmax family, which any segmentation
    network has; anything else reads a generative head (a GMM, prototypes) or mask queries."""
    if name in FITTED:
        needs = {n for base in FITTED[name].bases for n in SCORES[base].needs}
    elif name in SCORES:
        needs = set(SCORES[name].needs)
    else:
        raise ValueError(
            f"unknown anomaly score {name!r}; the table has {list(SCORES) + list(FITTED)}"
        )
    return tuple(n for n in INGREDIENTS if n in needs)


# ---------------------------------------------------------------------------- softmax family
@register_score("msp", "MSP: -max softmax", "logits")
def _msp(logits):
    # -log MSP = logsumexp - max: the order of -MSP without the ties float32 softmax makes at 1.0
    return torch.logsumexp(logits, 0) - logits.amax(0)


@register_score("entropy", "softmax entropy", "logits")
def _entropy(logits):
    log_p = torch.log_softmax(logits, 0)
    return -(log_p.exp() * log_p).sum(0)


@register_score("max_logit", "max logit: -max_c logit", "logits")
def _max_logit(logits):
    return -logits.amax(0)


@register_score("energy", "energy: -logsumexp_c logit", "logits")
def _energy(logits):
    return -torch.logsumexp(logits, 0)


# ---------------------------------------------------------------------------- densities
@register_score("likelihood", "GMM: -max_c log p(x|c)", "log_likelihood")
def _likelihood(log_likelihood):
    return -log_likelihood.amax(0)


@register_score("marginal", "GMM: -log p(x) (mixture marginal)", "log_marginal")
def _marginal(log_marginal):
    return -log_marginal


@register_score(
    "likelihood_ratio",
    "GMM: -max_c log p(x|c) + log p_background(x)",
    "log_likelihood",
    "log_background",
)
def _likelihood_ratio(log_likelihood, log_background):
    # how much less likely under its best class than under the known data as a whole: a shift that
    # lowers every density (a new camera) lowers both terms
    return log_background - log_likelihood.amax(0)


@register_score(
    "background",
    "-log p_background(x): the class-agnostic mixture of known embeddings",
    "log_background",
)
def _background(log_background):
    return -log_background


@register_score("prototype", "ProtoSeg: -max_c cosine", "similarity")
def _prototype(similarity):
    return -similarity.amax(0)


# ---------------------------------------------------------------------------- mask classification
@register_score("rba", "RbA: -sum_k tanh(sum_q p_q(k) m_q)", "mask_scores")
def _rba(mask_scores):
    # Rejected by All (Nayal et al. 2023): a pixel that no class claims scores 0, the most anomalous
    return -torch.tanh(mask_scores).sum(0)


@register_score("eam", "EAM: 1 - sum_q m_q max_k p_q(k)", "query_mass")
def _eam(query_mass):
    # ensemble of the queries' maximum posteriors (Grcic et al. 2023)
    return 1.0 - query_mass


@register_score(
    "query_likelihood", "query GMM: -sum_q w_q max_k log p(e_q|k) / sum_q w_q", "query_likelihood"
)
def _query_likelihood(query_likelihood):
    return -query_likelihood


@register_score(
    "rba_likelihood",
    "RbA, queries weighted by their likelihood: -sum_k tanh(sum_q p_q(k) m_q lambda_q)",
    "weighted_mask_scores",
)
def _rba_likelihood(weighted_mask_scores):
    # RbA of the queries as the density sees them: a query as unlikely as the least likely known
    # pixels claims nothing (lambda_q -> 0), so no class claims the pixels it covers
    return -torch.tanh(weighted_mask_scores).sum(0)


def log_marginal(component_log_likelihood: torch.Tensor) -> torch.Tensor:
    """(N, K, M) component log-likelihoods -> (N,) log of the equal-weight mixture marginal."""
    n, k, m = component_log_likelihood.shape
    return torch.logsumexp(component_log_likelihood.reshape(n, k * m), 1) - math.log(k * m)


# A model's anomaly map ("anomaly_score": the demo's heat map, the exported map) when SCORE_KEY is
# "": the first of these its ingredients allow (GMM, ProtoSeg, Mask2Former with a GMM head); a
# softmax model has none unless SCORE_KEY names one.
DEFAULT_MAPS = ("likelihood", "prototype", "query_likelihood")


def default_map(ingredients: Iterable[str], configured: str = "") -> Optional[str]:
    """The name of the anomaly map of a model with these ingredients (module comment above)."""
    if configured in FITTED:  # computed after the others, from their maps (fitted_scores)
        return configured
    if configured:
        missing = [
            n for n in SCORES[check_score_name(configured)].needs if n not in set(ingredients)
        ]
        if missing:
            raise ValueError(
                f"{SCORE_KEY} is {configured!r}, which needs {missing}; this model provides "
                f"{sorted(ingredients)} (available: {available_scores(ingredients)})"
            )
        return configured
    have = available_scores(ingredients)
    return next((n for n in DEFAULT_MAPS if n in have), None)


def check_score_name(name: str) -> str:
    """`name` if the table has it ("" too: the model's default), else ValueError naming SCORE_KEY."""
    if name and name not in SCORES and name not in FITTED:
        raise ValueError(
            f"{SCORE_KEY} is {name!r}; the anomaly scores are {list(SCORES) + list(FITTED)} (or '' "
            f"for the model's default)"
        )
    return name


# ---------------------------------------------------------------------------- fitted on known pixels
# A fitted score is a function of other scores' maps, standardised with their mean and std over
# labelled pixels of a training split (tools/fit_scores.py writes them, scores/fit.py computes
# them): no anomaly and no weight tuned on anomalies enters. `per_class`: the statistics of the
# pixels predicted as each class (SML, Jung et al. 2021), indexed by the pixel's predicted class.
@dataclass(frozen=True)
class FittedScore:
    name: str
    label: str
    bases: Tuple[str, ...]  # the scores it standardises and sums
    per_class: bool


FITTED: "OrderedDict[str, FittedScore]" = OrderedDict()


def register_fitted_score(name: str, label: str, *bases: str, per_class: bool = False) -> None:
    """Add a fitted score: sum over `bases` of (score - mean) / std on known pixels (per predicted
    class with `per_class`)."""
    if name in SCORES or name in FITTED:
        raise ValueError(f"anomaly score {name!r} is registered twice")
    unknown = [b for b in bases if b not in SCORES]
    if unknown:
        raise ValueError(f"fitted score {name!r} standardises unknown scores {unknown}")
    FITTED[name] = FittedScore(name, label, tuple(bases), per_class)


register_fitted_score(
    "likelihood_std",
    "GMM likelihood standardised per predicted class",
    "likelihood",
    per_class=True,
)
register_fitted_score(
    "max_logit_std", "SML: max logit standardised per predicted class", "max_logit", per_class=True
)
register_fitted_score("likelihood_energy", "z(GMM likelihood) + z(energy)", "likelihood", "energy")
register_fitted_score(
    "likelihood_entropy", "z(GMM likelihood) + z(entropy)", "likelihood", "entropy"
)
register_fitted_score(
    "background_energy", "z(background density) + z(energy)", "background", "energy"
)
register_fitted_score(
    "background_entropy", "z(background density) + z(entropy)", "background", "entropy"
)
register_fitted_score(
    "query_likelihood_energy", "z(query GMM) + z(energy)", "query_likelihood", "energy"
)


def query_likelihood_weights(best_log_likelihood: torch.Tensor, stats: Dict) -> torch.Tensor:
    """(Q,) best known-class log-likelihood of each query -> (Q,) weights lambda_q in (0, 1): the
    share of known pixels whose "query_likelihood" score is at least the query's own, under a
    normal fit of that score on known pixels (`stats`: its entry of MODEL.ANOMALY_FIT). A query as
    likely as the median known pixel weighs 1/2, a far less likely one ~0."""
    s = stats["query_likelihood"]
    mean, std = float(s["mean_all"]), float(s["std_all"])
    # the score of a query is -log-likelihood; P(known score >= the query's) = Phi((mean - score) / std)
    return torch.special.ndtr((mean + best_log_likelihood.float()) / std)


def fitted_scores(
    maps: Dict[str, torch.Tensor],
    logits: Optional[torch.Tensor],
    stats: Dict,
    names: Optional[Iterable[str]] = None,
) -> "OrderedDict[str, torch.Tensor]":
    """{name: map} of the fitted scores `names` (default: every one whose bases `stats` holds).

    maps: {score name: (...) map} (a base missing here but in the softmax family is computed from
    `logits` (K, ...)); stats: {score name: {"mean": [K], "std": [K], "mean_all": m, "std_all": s}}
    (scores/fit.py). Per-class statistics are indexed by argmax of `logits`."""
    if names is None:
        names = [f.name for f in FITTED.values() if all(b in stats for b in f.bases)]
    out = OrderedDict()
    for name in names:
        if name not in FITTED:
            raise ValueError(
                f"unknown fitted anomaly score {name!r}; the fitted scores are {list(FITTED)}"
            )
        spec = FITTED[name]
        missing = [b for b in spec.bases if b not in stats]
        if missing:
            raise ValueError(
                f"fitted score {name!r} needs the known-pixel statistics of {missing} "
                f"(MODEL.ANOMALY_FIT holds {sorted(stats)}): run tools/fit_scores.py"
            )
        total = None
        for base in spec.bases:
            value = maps[base] if base in maps else compute_scores({"logits": logits}, [base])[base]
            s = stats[base]
            if spec.per_class:
                predicted = logits.argmax(0)
                mean = torch.as_tensor(s["mean"], dtype=torch.float32, device=value.device)[
                    predicted
                ]
                std = torch.as_tensor(s["std"], dtype=torch.float32, device=value.device)[predicted]
            else:
                mean, std = float(s["mean_all"]), float(s["std_all"])
            z = (value.float() - mean) / std
            total = z if total is None else total + z
        out[name] = total
    return out
