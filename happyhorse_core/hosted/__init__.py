"""Hosted HappyHorse 1.0 (Alibaba Cloud Model Studio / DashScope) without ComfyUI: request building and
checks (spec), media encoding (media_in), the async task protocol (tasks) over stdlib HTTP (transport),
temporary-storage upload (upload), key loading and redaction (keys), result decoding (result), and the
end-to-end run (run). The ComfyUI nodes are in nodes/hosted_nodes.py; the protocol notes are in README
("Hosted HappyHorse 1.0")."""
