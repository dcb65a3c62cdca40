"""The onboard line loop: sources (:mod:`.sources`), causal RX statistics (:mod:`.causal`), the
pipeline with line accounting (:mod:`.pipeline`), the per-stage profiler (:mod:`.profiler`),
sensor presets (:mod:`.presets`), the runner that drives a source through a pipeline
(:mod:`.run`), and the pipeline of a stream detector built in one call (:mod:`.onboard`)."""
