/**
 * The PlaceOrder saga as a Step Functions Standard state machine, from the document the saga
 * crate exports. Step Functions holds the saga's state (no saga table), sends each command to
 * the bus with a task token (`putEvents.waitForTaskToken`) and waits for the participant's
 * `SendTaskSuccess`/`SendTaskFailure`.
 */
import { RemovalPolicy } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';

import { BUS_SUBSTITUTION, SagaDocument } from './saga-definition';

export interface SagaProps {
  /** The document as checked in (with the `${EventBusName}` placeholder). */
  readonly definitionText: string;
  readonly document: SagaDocument;
  readonly bus: events.IEventBus;
}

export class Saga extends Construct {
  readonly stateMachine: sfn.StateMachine;

  constructor(scope: Construct, id: string, props: SagaProps) {
    super(scope, id);
    const logGroup = new logs.LogGroup(this, 'Logs', {
      retention: logs.RetentionDays.ONE_MONTH,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.stateMachine = new sfn.StateMachine(this, 'PlaceOrder', {
      stateMachineType: sfn.StateMachineType.STANDARD,
      // The text as checked in, so the template shows exactly what the saga crate exported.
      definitionBody: sfn.DefinitionBody.fromString(props.definitionText),
      definitionSubstitutions: { [BUS_SUBSTITUTION]: props.bus.eventBusName },
      // Failed executions (compensated or needing attention) are logged; the data is not, since
      // it carries customers' orders and addresses.
      logs: { destination: logGroup, level: sfn.LogLevel.ERROR, includeExecutionData: false },
    });
    // The tasks put the commands on the bus: PutEvents on this bus only.
    props.bus.grantPutEventsTo(this.stateMachine);
  }
}
