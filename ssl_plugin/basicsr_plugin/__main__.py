"""``python -m ssl_plugin.basicsr_plugin install|uninstall|status``: manage the import hook's ``.pth`` file."""
from .autoload import main

main()
