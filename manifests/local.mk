## manifests: rules are added as the module lands.
