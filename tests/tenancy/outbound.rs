// Cases are added by the change that fixes them.
