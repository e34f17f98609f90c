# Infrastructure targets, included by the Makefile. The CDK CLI is pinned in package.json.
# The app runs with the project's venv first on PATH, because cdk.json says "python3 app.py".

CDK_ENV := PATH="$(CURDIR)/$(BIN):$$PATH" JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20

.PHONY: synth

node_modules: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

synth: install node_modules ## the CloudFormation template (the Lambda layer built for real, cdk-nag enforced), then cfn-lint
	$(CDK_ENV) npx cdk synth --quiet
	$(BIN)/cfn-lint -i W3005 -- cdk.out/*.template.json
