"""lm-evaluation-harness integration: the `learn2pd` lm-eval model, its command line and decoding costs.

lm-eval 0.4.13 finds a model by name in its registry only, which imports fill (it has no entry-point group for
third-party models), so importing this package registers `learn2pd`: `import learn2pd.harness` before
`lm_eval.simple_evaluate(model="learn2pd", ...)`, or pass a `Learn2PDLM` instance. On the command line,
`learn2pd lm-eval ...` (`python -m learn2pd.harness ...`) is lm-eval's own CLI with the model registered.
"""

from learn2pd.harness.lm import Learn2PDLM

__all__ = ["Learn2PDLM"]
