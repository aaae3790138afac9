"""Model families. Each file defines one family and registers it with `@MODELS.register(name)`.

A registered model class (models/protocols.py: ModelFamily) has:
    config_class: its pydantic options (with `type: Literal[name]`, `size` presets in PRESETS, and
                  `tiny(schema, folder)`: the smallest config that runs, for the contract tests)
    input_kinds:  the data kinds it accepts (e.g. {"table"}, {"image"})
    from_config(config, schema) -> nn.Module: builds itself from the data's schema.
Optional capabilities (owns its update, generative, language model, encoder, groups its
parameters, one fixed task, ...) are declared as Protocols in models/protocols.py.
`create_model(config, schema)` is the single factory.
"""

# Importing a family registers it. Order = order in listings and in the JSON schema.
from damoxing.models import (  # noqa: E402,F401  (registration)
    cnn,
    fasttext,
    gan,
    gpt,
    linear,
    mlp,
    pretrained,
    rnn,
    sklearn,
    transformer,
    vae,
)
from damoxing.models.registry import (  # noqa: E402
    MODELS,
    count_parameters,
    create_model,
    data_needs,
    family_task,
    resolve_size,
)

__all__ = ["MODELS", "create_model", "data_needs", "family_task", "resolve_size", "count_parameters"]
