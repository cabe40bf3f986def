"""The Ray layer, kept thin: engine replicas, the OpenAI ingress, the app builder and the CLI."""
