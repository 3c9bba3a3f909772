"""Names shared across the plugin."""

#: Token scope of a site's federation credential: launch and stop notebooks, nothing else.
LAUNCH_SCOPE = 'resolver.notebook.launch'
