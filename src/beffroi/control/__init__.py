"""Every command to equipment: select-before-operate, interlocks, playbooks, lighting, audit."""
