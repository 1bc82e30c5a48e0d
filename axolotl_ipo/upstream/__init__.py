"""Adapters: the only modules that touch the internals of the libraries we build on.

One module per upstream, so that a new release of one of them breaks one file:

- `upstream/axolotl.py`: everything of Axolotl's except its plugin base class (config loading
  and schema, validation without training's DeepSpeed setup or an unreachable hub, tokenizer
  and dataset loaders, `DictDefault`, the RL loader's length filter, the CUDA peer-to-peer
  probe, the CLI modules self-play launches), and which releases we support
  (`upstream/releases.txt`, the one list the scripts, tests, Dockerfile and pyproject agree on);
- `upstream/transformers.py`: transformers' DeepSpeed registration, KV-cache reordering and the
  Trainer's callback list;
- `upstream/trl.py`: TRL's loss names and how its DPOTrainer tokenises a text pair;
- `upstream/accelerate.py`: what accelerate's launcher leaves in a process's environment (a
  launch that started one process where more were asked for);
- `pairs/sampler/vllm_backend.py` is the vLLM adapter (every vLLM touch is already there).

The rule the rest of the package follows (`tests/test_upstream.py` enforces it): a module
outside these adapters imports from axolotl, trl, transformers, vllm, accelerate, peft or
datasets only the public names in :data:`PUBLIC`, the documented entry points whose use is
the libraries' advertised interface. Anything else (an Axolotl module other than its plugin
base class, a private name, an attribute of an object's internals, a copy of an upstream
function's behaviour) lives in the upstream's adapter, and each adapter lists in ``REQUIRED``
every upstream name it touches, so that the test fails, naming the name, on a release that
moved one.
"""

# Public APIs that any module may import directly, as "module:name".
PUBLIC = frozenset({
    # Axolotl's plugin interface: its module docstring says "to create a new plugin, you need
    # to inherit from the BasePlugin class", and `plugins: [module.Class]` loads such classes.
    "axolotl.integrations.base:BasePlugin",
    "transformers:AutoModelForCausalLM",
    "transformers:AutoTokenizer",
    "transformers:GenerationConfig",
    # generate()'s documented extension point (`logits_processor=`) and two of its processors
    "transformers:LogitsProcessor",
    "transformers:LogitsProcessorList",
    "transformers:TemperatureLogitsWarper",
    "transformers:TopPLogitsWarper",
    "transformers:TrainerCallback",
    "peft:PeftModel",
    "datasets:DatasetDict",
})
