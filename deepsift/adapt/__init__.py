"""A new generator appears: measure the model on it, adapt by the cheapest route that works, publish.

``deepsift adapt`` runs :func:`deepsift.adapt.runner.run_adapt` over an :class:`~deepsift.adapt.plan.AdaptPlan`:
build the new generator's images from D3 prompts (:mod:`deepsift.adapt.build`, ``data build``) or take a
folder of them, embed every image once, measure BEFORE (the model as it is), refit the heads on the old
and the new generators (the kNN head simply takes the new examples: the paper's few-shot route), measure
AFTER on held-out images of the new generator and on every old one (forgetting); when that misses the
target, fine-tune the backbone with replay of the old generators (:mod:`deepsift.adapt.finetune`,
``train --init``) and measure again; write a model folder with its lineage and a model card
(:mod:`deepsift.model.card`). Every step's output is kept in ``OUT/steps/``; a re-run resumes.
"""
