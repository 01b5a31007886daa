"""Empirical epsilon lower bounds from membership-inference outcomes.

Two bounds, both lower bounds on the epsilon of the mechanism that turned the members into
the released artefact, holding with probability >= 1 - alpha:

- `split_threshold_epsilon`: the hypothesis-testing bound. Any (eps, delta)-DP mechanism
  satisfies FPR + e^eps FNR >= 1 - delta and FNR + e^eps FPR >= 1 - delta for every test, so
  eps >= max(log((1 - delta - FNR) / FPR), log((1 - delta - FPR) / FNR)). FPR and FNR are
  replaced by one-sided Clopper-Pearson upper bounds (alpha/2 each); the threshold is chosen
  on one half of the targets and the rates are counted on the other half, so choosing it adds
  no bias. The test is made for many independent training runs; applied to the targets of one
  run it is the usual membership-audit practice, not a theorem. The one-run bound is.
- `one_run_epsilon_bound`: Steinke, Nasr, Jagielski (NeurIPS 2023), "Privacy auditing with one
  (1) training run". m targets whose membership was decided at random; the auditor guesses IN
  for its k+ highest scores and OUT for its k- lowest (r = k+ + k- guesses, v correct). For an
  eps-DP mechanism P[v' >= v] <= P[Binomial(r, e^eps / (1 + e^eps)) >= v]; with delta the
  paper's Algorithm adds 2 m delta max_{i=1..v} P[v - i <= Binomial(r, q) < v] / i. The bound
  is the largest eps whose p-value is below the confidence level (bisection). The (k+, k-)
  configurations come from a fixed grid and the confidence level is split over them
  (Bonferroni), so picking the best one keeps the guarantee. The delta term caps the bound
  when 2 m delta is not small (about 2.6 for m = 2,000 targets and delta = 1e-5).
- `fdp_one_run_epsilon_bound`: Mahloujifar, Melis, Chaudhuri (ICML 2025), "Auditing f-Differential
  Privacy in One Run". The same guesses, tested against the trade-off curve of the Gaussian
  mechanism that is exactly (eps, delta)-DP (mu-GDP with delta(eps; mu) = delta) instead of
  (eps, delta)-DP's worst case; this is the claim a DP-SGD or Gaussian-release generator makes,
  and the test is tighter (no 2 m delta term). The p-value bound is the paper's recursion over
  the correct guesses (its `audit_rh_with_cap`); the guess grid and Bonferroni split are the
  one-run bound's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats
from scipy.optimize import brentq
from scipy.special import log_ndtr, ndtr, ndtri

# Fractions of one side's target count tried as k (guesses per side) by the one-run audit.
ONE_RUN_FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass
class EpsilonBound:
    """A lower bound on epsilon at confidence `confidence`, with what it was computed from."""

    method: str
    value: float
    confidence: float
    delta: float
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"method": self.method, "value": self.value, "confidence": self.confidence,
                "delta": self.delta, **self.details}


def clopper_pearson_upper(k, n, alpha: float):
    """One-sided (1 - alpha) Clopper-Pearson upper bound on a rate with k successes in n trials."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore"):
        upper = stats.beta.ppf(1 - alpha, k + 1, n - k)
    return np.where(k >= n, 1.0, upper)


def epsilon_from_rates(fpr, fnr, delta: float):
    """max(log((1 - delta - FNR) / FPR), log((1 - delta - FPR) / FNR), 0), elementwise."""
    fpr, fnr = np.asarray(fpr, dtype=float), np.asarray(fnr, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.log(np.clip(1 - delta - fnr, 0, None) / fpr)
        second = np.log(np.clip(1 - delta - fpr, 0, None) / fnr)
    bound = np.fmax(np.nan_to_num(first, nan=0.0, neginf=0.0), np.nan_to_num(second, nan=0.0, neginf=0.0))
    return np.maximum(bound, 0.0)


def counts_epsilon(fp, n_neg, fn, n_pos, delta: float, alpha: float):
    """The Clopper-Pearson epsilon lower bound from false-positive and false-negative counts
    (alpha split evenly between the two rates)."""
    return epsilon_from_rates(
        clopper_pearson_upper(fp, n_neg, alpha / 2), clopper_pearson_upper(fn, n_pos, alpha / 2), delta
    )


def _threshold_counts(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every distinct score t (rule: member iff score >= t): t, false positives, false negatives."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each run of equal scores
    tp, fp = np.cumsum(y)[last], np.cumsum(1 - y)[last]
    return s[last], fp, y.sum() - tp


def split_threshold_epsilon(scores, labels, *, delta: float, alpha: float = 0.05, seed: int = 0) -> EpsilonBound:
    """Clopper-Pearson (eps, delta) lower bound: threshold chosen on a random half of the targets
    (stratified by label) to maximise the bound there, FPR/FNR counted on the other half."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    rng = np.random.default_rng(seed)
    choose = np.zeros(len(labels), dtype=bool)
    for value in (0, 1):
        idx = rng.permutation(np.flatnonzero(labels == value))
        choose[idx[: len(idx) // 2]] = True
    evaluate = ~choose
    n_pos, n_neg = int(labels[evaluate].sum()), int((1 - labels[evaluate]).sum())
    details = {"n_members": n_pos, "n_nonmembers": n_neg}
    if n_pos == 0 or n_neg == 0 or not choose.any():
        return EpsilonBound("clopper_pearson", 0.0, 1 - alpha, delta, details)
    thresholds, fp, fn = _threshold_counts(scores[choose], labels[choose])
    c_pos, c_neg = int(labels[choose].sum()), int((1 - labels[choose]).sum())
    best = int(np.argmax(counts_epsilon(fp, c_neg, fn, c_pos, delta, alpha)))
    # Midway to the next lower score: the same rule on this half, a margin for the other half.
    threshold = thresholds[best] if best + 1 == len(thresholds) else (thresholds[best] + thresholds[best + 1]) / 2
    predicted = scores[evaluate] >= threshold
    fp_eval = int((predicted & (labels[evaluate] == 0)).sum())
    fn_eval = int((~predicted & (labels[evaluate] == 1)).sum())
    value = float(counts_epsilon(fp_eval, n_neg, fn_eval, n_pos, delta, alpha))
    details.update(threshold=float(threshold), false_positives=fp_eval, false_negatives=fn_eval)
    return EpsilonBound("clopper_pearson", value, 1 - alpha, delta, details)


def one_run_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P[at least v of r guesses correct] for an (eps, delta)-DP mechanism with m random
    canaries (Steinke et al. 2023, Theorem 3.1 with the delta term of their Algorithm 2)."""
    if v <= 0:
        return 1.0
    q = 1 / (1 + math.exp(-eps))  # the accuracy of eps-DP randomised response
    tail = stats.binom.sf(v - 1, r, q)
    if delta > 0:
        # P[v - i <= Binomial(r, q) < v] / i for i = 1..v; the worst i enters the delta term.
        window = np.cumsum(stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)) / np.arange(1, v + 1)
        tail += 2 * m * delta * float(window.max())
    return min(float(tail), 1.0)


def one_run_epsilon(m: int, r: int, v: int, *, delta: float, beta: float, tol: float = 1e-6) -> float:
    """The largest eps that v correct of r guesses rejects at level beta (0 if none)."""
    if one_run_p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    low, high = 0.0, 1.0
    while one_run_p_value(m, r, v, high, delta) < beta:
        low, high = high, 2 * high
        if high > 1e3:
            return high
    while high - low > tol:
        mid = (low + high) / 2
        low, high = (mid, high) if one_run_p_value(m, r, v, mid, delta) < beta else (low, mid)
    return low


def one_run_epsilon_bound(scores, labels, *, delta: float, alpha: float = 0.05, seed: int = 0) -> EpsilonBound:
    """Steinke-Nasr-Jagielski one-run lower bound, best over a fixed grid of guess counts
    (IN for the k highest scores, and either no OUT guesses or OUT for the k lowest)."""
    # Ties broken in a seeded random order: targets arrive sorted by label.
    ranked, configs = _ranked_configs(scores, labels, seed, two_sided=True)
    m, beta = len(ranked), alpha / len(configs)
    best = {"value": 0.0, "k_in": 0, "k_out": 0, "guesses": 0, "correct": 0}
    for k_in, k_out in configs:
        correct = int(ranked[:k_in].sum()) + (int((1 - ranked[m - k_out :]).sum()) if k_out else 0)
        value = one_run_epsilon(m, k_in + k_out, correct, delta=delta, beta=beta)
        if value > best["value"]:
            best = {"value": value, "k_in": k_in, "k_out": k_out, "guesses": k_in + k_out, "correct": correct}
    value = best.pop("value")
    return EpsilonBound("one_run", value, 1 - alpha, delta, {"canaries": m, "configurations": len(configs), **best})


def gaussian_log_delta(eps: float, mu: float) -> float:
    """log delta(eps; mu) of mu-GDP (the Gaussian mechanism with sensitivity / sigma = mu):
    delta = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2) (Dong, Roth, Su 2019, Cor. 2.13),
    computed in the log domain, log Phi(a) + log(1 - e^(log(e^eps Phi(b)) - log Phi(a))), so that
    deltas far below 1e-300 stay exact (and as erf(mu / 2 sqrt 2) at eps = 0, where the two
    terms cancel)."""
    if mu <= 0:
        return -math.inf
    if math.isinf(mu):
        return 0.0
    if eps == 0:  # Phi(mu/2) - Phi(-mu/2) without the cancellation at small mu
        return math.log(math.erf(mu / (2 * math.sqrt(2))))
    first = float(log_ndtr(-eps / mu + mu / 2))
    second = eps + float(log_ndtr(-eps / mu - mu / 2))
    return first + math.log(-math.expm1(second - first)) if second < first else -math.inf


def gaussian_mu(eps: float, delta: float) -> float:
    """mu of the Gaussian mechanism that is exactly (eps, delta)-DP: the root in mu of
    delta(eps; mu) = delta, which increases with mu (brentq on log delta). Written with scipy:
    dp_accounting, which has it (get_sigma_gaussian gives 1 / mu), is an optional extra."""
    if not 0 < delta < 1:
        raise ValueError(f"the Gaussian trade-off curve of an (eps, delta) claim needs 0 < delta < 1, got {delta}")
    target = math.log(delta)
    low, high = 1.0, 1.0
    while gaussian_log_delta(eps, low) >= target:  # halving mu only lowers delta
        low /= 2
    while gaussian_log_delta(eps, high) <= target:
        high *= 2
        if high > 1e6:  # delta below anything Phi can represent at this eps
            return math.inf
    return float(brentq(lambda mu: gaussian_log_delta(eps, mu) - target, low, high, xtol=1e-14, rtol=1e-13))


def gaussian_epsilon(mu: float, delta: float) -> float:
    """The smallest eps at which mu-GDP is (eps, delta)-DP (the inverse of `gaussian_mu`)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    target = math.log(delta)
    if gaussian_log_delta(0.0, mu) <= target:
        return 0.0
    high = 1.0
    while gaussian_log_delta(high, mu) > target:  # delta(eps; mu) decreases with eps
        high *= 2
    return float(brentq(lambda eps: gaussian_log_delta(eps, mu) - target, 0.0, high, xtol=1e-12))


def fdp_rejects(m: int, r: int, v: int, mu: float, beta: float) -> bool:
    """Whether v correct of r IN guesses on m canaries reject mu-GDP at level beta: Mahloujifar,
    Melis, Chaudhuri (2025), the recursion of their `audit_rh_with_cap`. With g(x) = Phi(Phi^-1(x)
    - mu), the inverse of the Gaussian blow-up, start from r_ = beta v / m and h = beta (r - v) / m;
    for i = v - 1 down to 0: h' = max(h, g(r_)), r_ += i / (r - i) (h' - h) (capped at 1), h = h'.
    Rejected iff r_ + h > r / m.

    Both r_ and h only grow, so the loop stops as soon as their sum passes r / m (rejected) or h
    stops moving (h' == h: then nothing moves again). scipy.special's ndtr / ndtri are used
    directly (a microsecond a step; scipy.stats.norm costs ~100x that)."""
    if v <= 0 or r <= 0:
        return False
    threshold = r / m
    correct, wrong = beta * v / m, beta * (r - v) / m
    for i in range(v - 1, -1, -1):
        if correct + wrong > threshold:
            return True
        pushed = max(wrong, float(ndtr(ndtri(correct) - mu)))
        if pushed == wrong:
            break
        correct = min(correct + i / (r - i) * (pushed - wrong), 1.0)
        wrong = pushed
    return correct + wrong > threshold


def fdp_one_run_epsilon(m: int, r: int, v: int, *, delta: float, beta: float, tol: float = 1e-6) -> float:
    """The largest eps whose Gaussian trade-off curve at delta (mu = gaussian_mu(eps, delta)) v
    correct of r guesses reject at level beta, by doubling then bisection (0 if none)."""
    def rejects(eps: float) -> bool:
        return fdp_rejects(m, r, v, gaussian_mu(eps, delta), beta)

    if not rejects(0.0):
        return 0.0
    low, high = 0.0, 1.0
    while rejects(high):
        low, high = high, 2 * high
        if high > 1e3:
            return high
    while high - low > tol:
        mid = (low + high) / 2
        low, high = (mid, high) if rejects(mid) else (low, mid)
    return low


def _ranked_configs(scores, labels, seed: int, two_sided: bool):
    """Labels in score order (ties in a seeded random order) and the (k_in, k_out) guess grid."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    m = len(scores)
    perm = np.random.default_rng(seed).permutation(m)
    ranked = labels[perm][np.argsort(-scores[perm], kind="stable")]
    side = max(min(int(labels.sum()), m - int(labels.sum())), 1)
    ks = sorted({max(1, math.ceil(f * side)) for f in ONE_RUN_FRACTIONS})
    configs = [(k, 0) for k in ks] + ([(k, k) for k in ks if 2 * k <= m] if two_sided else [])
    return ranked, configs


def fdp_one_run_epsilon_bound(scores, labels, *, delta: float, alpha: float = 0.05, seed: int = 0) -> EpsilonBound:
    """Mahloujifar-Melis-Chaudhuri f-DP one-run lower bound against the Gaussian trade-off curve,
    best over the one-run grid of IN-guess counts (one-sided: IN for the k highest scores)."""
    if not 0 < delta < 1:
        raise ValueError(f"the f-DP one-run bound tests the Gaussian curve of an (eps, delta) claim: "
                         f"it needs 0 < delta < 1, got {delta}")
    ranked, configs = _ranked_configs(scores, labels, seed, two_sided=False)
    m, beta = len(ranked), alpha / len(configs)
    best = {"value": 0.0, "k_in": 0, "guesses": 0, "correct": 0}
    for k_in, _ in configs:
        correct = int(ranked[:k_in].sum())
        value = fdp_one_run_epsilon(m, k_in, correct, delta=delta, beta=beta)
        if value > best["value"]:
            best = {"value": value, "k_in": k_in, "guesses": k_in, "correct": correct}
    value = best.pop("value")
    return EpsilonBound("fdp_one_run", value, 1 - alpha, delta, {"canaries": m, "configurations": len(configs), **best})
