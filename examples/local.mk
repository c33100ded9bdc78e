## examples: rules are added as the module lands.
