"""Model families. Each file defines one family and registers it with `@MODELS.register(name)`.

A registered model class has:
    config_class: its pydantic options (with `type: Literal[name]` and `size` presets)
    input_kinds:  the data kinds it accepts (e.g. {"table"}, {"image"})
    from_config(config, schema) -> nn.Module: builds itself from the data's schema.
    task (optional): the one task the family does whatever the data holds (vae, gan: "generation").
`create_model(config, schema)` is the single factory.
"""

# Importing a family registers it. Order = order in listings and in the JSON schema.
from damoxing.models import (  # noqa: E402,F401  (registration)
    cnn,
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
